"""The diff's first, narrow pass: which rows can differ at all.

The bulk of a day is pairs that match and agree. Joining both sides whole to find the
few that do not carries every column of every row through the join (and its spill). So
the first join carries per row only the key's hash, the compared values and the line,
finds the key hashes whose rows may not pair off equal, and fetches only the rows of
those keys, which recon.engine then pairs exactly. A key's rows are always fetched
together, on both sides: the exact pairing of the fetched rows is the whole diff's
for their keys.

A key hash is wanted when a row of it is alone, when its pair's values differ, or when
it repeats on one side while present on the other (its copies are paired by order,
exactly, among the fetched rows). The compared values include the key's parts, so two
keys sharing a key hash differ there and are fetched: the exact pairing then sees the
collision. Values, not hashes of them, are compared: a hash collision between a pair's
two rows would hide a break, and a reconciliation may not rest on luck.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb
import polars as pl

from recon.duck import as_query

# What the mismatch rules compare, per row, with the key's parts (see above). Amounts as
# (minor units, exponent). A ledger row's empty or NULL channel_txn_id is never compared,
# hence apart (NULL then).
_FIELDS = (
    "row(amount_minor, exponent, currency, status, merchant_order_id, merchant_refund_id, txn_type)"
)
_LEDGER_TXN = "CASE WHEN channel_txn_id <> '' THEN channel_txn_id END"
_BILL_TXN = "channel_txn_id"

# One pass over both sides: their row counts, how many pairings hold a row of each (a
# key hash repeated on one side and present on the other pairs its rows more than once)
# and the key hashes of the pairings that are not two rows with equal values.
_NARROW_SQL = """
WITH
l AS (SELECT {h} AS h, {fields} AS f, {l_txn} AS t, origin_line AS n FROM ({ledger})),
b AS (SELECT {h} AS h, {fields} AS f, {b_txn} AS t, origin_line AS n FROM ({bill}))
SELECT
  (SELECT count(*) FROM ({ledger})) AS ledger_rows,
  (SELECT count(*) FROM ({bill})) AS bill_rows,
  count(l.f) AS ledger_paired,
  count(b.f) AS bill_paired,
  list({{
    'h': coalesce(b.h, l.h), 'l': l.f IS NOT NULL, 'b': b.f IS NOT NULL, 'ln': l.n, 'bn': b.n
  }}) FILTER (
    WHERE l.f IS NULL OR b.f IS NULL OR l.f IS DISTINCT FROM b.f
       OR (l.t IS NOT NULL AND l.t IS DISTINCT FROM b.t)
  ) AS wanted
FROM b FULL OUTER JOIN l ON b.h = l.h
"""
# Key hashes repeated on a side (only looked for when some are also on the other side).
_REPEATED_SQL = "SELECT h FROM (SELECT {h} AS h FROM ({side})) GROUP BY h HAVING count(*) > 1"
# A side's wanted rows. A row with a NULL key part (NULL key hash) pairs with nothing.
_FETCH_SQL = """
SELECT * EXCLUDE (_h) FROM (SELECT {cols}, {h} AS _h FROM ({side}))
WHERE _h IS NULL OR _h IN (SELECT h FROM ({wanted}))
"""
# On their lines, when known: the filter reaches the scan, which then skips the other
# rows (hashing and decoding only the few).
_LINES = "origin_line IN (SELECT n FROM ({lines}))"


class Narrowed(NamedTuple):
    ledger_rows: int  # of the whole sides
    bill_rows: int
    ledger: pl.DataFrame  # the rows of the wanted keys, side columns
    bill: pl.DataFrame


def narrow(
    con: duckdb.DuckDBPyConnection, ledger: str, bill: str, key_hash: str, cols: list[str]
) -> Narrowed:
    """The rows of each side (queries yielding ``cols``) whose keys may not pair off
    equal, with the row counts of the whole sides. ``key_hash`` is the key's hash in SQL."""
    sql = _NARROW_SQL.format(
        h=key_hash, fields=_FIELDS, l_txn=_LEDGER_TXN, b_txn=_BILL_TXN,
        ledger=ledger, bill=bill,
    )  # fmt: skip
    got = con.sql(sql).pl()
    l_rows, b_rows, l_paired, b_paired = (
        int(got[c][0]) for c in ("ledger_rows", "bill_rows", "ledger_paired", "bill_paired")
    )
    pairs = got.select(pl.col("wanted").explode()).drop_nulls().unnest("wanted")
    wanted = pairs.select("h").drop_nulls()
    # When each key hash on both sides has one row on each, every row of a wanted key
    # hash is in a wanted pairing, with its line.
    lines: list[pl.DataFrame | None] = [
        pairs.filter(present).select(n=line) for present, line in (("l", "ln"), ("b", "bn"))
    ]
    if l_paired != l_rows or b_paired != b_rows:
        repeated = [con.sql(_REPEATED_SQL.format(h=key_hash, side=s)).pl() for s in (ledger, bill)]
        wanted = pl.concat([wanted, *repeated])
        lines = [None, None]
    with as_query(con, wanted.unique(), ["h"]) as w:
        fetched = [
            _fetch(con, _FETCH_SQL.format(cols=", ".join(cols), h=key_hash, side=q, wanted=w), n)
            for q, n in zip((ledger, bill), lines, strict=True)
        ]
    return Narrowed(l_rows, b_rows, *fetched)


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, lines: pl.DataFrame | None) -> pl.DataFrame:
    """A side's wanted rows (``sql``: _FETCH_SQL), read from the lines given when all of
    them are known."""
    rows: pl.DataFrame
    if lines is None or lines["n"].null_count() > 0:
        rows = con.sql(sql).pl()
    else:
        with as_query(con, lines.unique(), ["n"]) as n:
            rows = con.sql(f"SELECT * FROM ({sql}) WHERE {_LINES.format(lines=n)}").pl()
    return rows
