"""The diff's first, narrow pass: which rows can differ at all.

The bulk of a day is pairs that match and agree. Joining both sides whole to find the
few that do not carries every column of every row through the join (and its spill). So
the first join, on the key itself, carries per row only the compared values and the
line, finds the keys whose rows may not pair off equal, and fetches only the rows of
those keys, which recon.engine then pairs exactly: by the lines of the wanted pairings
(keeping only the wanted keys' rows), or, when a key on both sides repeats or a line
is unknown, by key hash (a hash shared with another key only fetches more rows). A
key's rows are always fetched together, on both sides: the exact pairing of the
fetched rows is the whole diff's for their keys.

A key is wanted when a row of it is alone, when its pair's values differ, or when it
repeats on one side while present on the other (its copies are paired by order,
exactly, among the fetched rows). Values, not hashes of them, are compared: a hash
collision between a pair's two rows would hide a break, and a reconciliation may not
rest on luck. The join is on the key's parts, not on a hash of them, for the same
reason; it is also the cheaper join, as a hash join must keep the parts to tell two
keys of one hash apart, and what the join keeps decides when it spills.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb
import polars as pl

from recon.duck import as_query
from recon.sides import KEY

# What the mismatch rules compare, per row, beside the key. Amounts as (minor units,
# exponent). A ledger row's empty or NULL channel_txn_id is never compared, hence
# apart (NULL then). ``p``: the row is there (any of its values may be NULL).
_VALUES = (
    "amount_minor AS a, exponent AS e, currency AS c, status AS s, {t} AS t, "
    "origin_line AS n, TRUE AS p"
)
_LEDGER_VALUES = _VALUES.format(t="CASE WHEN channel_txn_id <> '' THEN channel_txn_id END")
_BILL_VALUES = _VALUES.format(t="channel_txn_id")

# One pass over both sides: their row counts, how many pairings hold a row of each (a
# key repeated on one side and present on the other pairs its rows more than once)
# and the keys of the pairings that are not two rows with equal values. A key with a
# NULL part pairs with nothing, as in the exact pairing.
_NARROW_SQL = """
WITH
l AS (SELECT txn_type, merchant_order_id, merchant_refund_id, {l_values} FROM ({ledger})),
b AS (SELECT txn_type, merchant_order_id, merchant_refund_id, {b_values} FROM ({bill}))
SELECT
  (SELECT count(*) FROM ({ledger})) AS ledger_rows,
  (SELECT count(*) FROM ({bill})) AS bill_rows,
  count(l.p) AS ledger_paired,
  count(b.p) AS bill_paired,
  list({{
    'txn_type': txn_type, 'merchant_order_id': merchant_order_id,
    'merchant_refund_id': merchant_refund_id,
    'l': l.p IS NOT NULL, 'b': b.p IS NOT NULL, 'ln': l.n, 'bn': b.n
  }}) FILTER (
    WHERE l.p IS NULL OR b.p IS NULL
       OR l.a IS DISTINCT FROM b.a OR l.e IS DISTINCT FROM b.e
       OR l.c IS DISTINCT FROM b.c OR l.s IS DISTINCT FROM b.s
       OR (l.t IS NOT NULL AND l.t IS DISTINCT FROM b.t)
  ) AS wanted
FROM b FULL OUTER JOIN l USING (txn_type, merchant_order_id, merchant_refund_id)
"""
# The key hashes of the wanted keys (a NULL one: a key with a NULL part).
_WANTED_HASHES_SQL = "SELECT {h} AS h FROM ({keys})"
# Key hashes repeated on a side (only looked for when some are also on the other side).
_REPEATED_SQL = "SELECT h FROM (SELECT {h} AS h FROM ({side})) GROUP BY h HAVING count(*) > 1"
# A side's wanted rows. A row with a NULL key part (NULL key hash) pairs with nothing.
_FETCH_SQL = """
SELECT * EXCLUDE (_h) FROM (SELECT {cols}, {h} AS _h FROM ({side}))
WHERE _h IS NULL OR _h IN (SELECT h FROM ({wanted}))
"""


class Narrowed(NamedTuple):
    ledger_rows: int  # of the whole sides
    bill_rows: int
    ledger: pl.DataFrame  # the rows of the wanted keys, side columns
    bill: pl.DataFrame


def narrow(
    con: duckdb.DuckDBPyConnection,
    ledger: pl.DataFrame | str,
    bill: pl.DataFrame | str,
    key_hash: str,
    cols: list[str],
) -> Narrowed:
    """The rows of each side (a frame, or a query yielding ``cols``) whose keys may not
    pair off equal, with the row counts of the whole sides. ``key_hash`` is the key's
    hash in SQL."""
    with as_query(con, ledger, cols) as lq, as_query(con, bill, cols) as bq:
        sql = _NARROW_SQL.format(l_values=_LEDGER_VALUES, b_values=_BILL_VALUES, ledger=lq, bill=bq)
        got = con.sql(sql).pl()
        l_rows, b_rows, l_paired, b_paired = (
            int(got[c][0]) for c in ("ledger_rows", "bill_rows", "ledger_paired", "bill_paired")
        )
        pairs = got.select(pl.col("wanted").explode()).drop_nulls().unnest("wanted")
        keys = pairs.select(KEY).unique()
        lines = [pairs.filter(p).get_column(n) for p, n in (("l", "ln"), ("b", "bn"))]
        repeats = l_paired != l_rows or b_paired != b_rows
        if not repeats and not any(n.has_nulls() for n in lines):
            # No key on both sides repeats on either: every row of a wanted key is in a
            # wanted pairing, with its line. Lines repeat across a side's files, so a
            # line may also bring another key's row: only the wanted keys' are kept.
            fetched = [
                _of_keys(_on_lines(con, side, n, cols), keys)
                for side, n in zip((ledger, bill), lines, strict=True)
            ]
        else:
            fetched = _by_key_hash(con, (lq, bq), keys, key_hash, cols, repeated=repeats)
    return Narrowed(l_rows, b_rows, *fetched)


def _by_key_hash(
    con: duckdb.DuckDBPyConnection,
    sides: tuple[str, str],
    keys: pl.DataFrame,
    key_hash: str,
    cols: list[str],
    *,
    repeated: bool,
) -> list[pl.DataFrame]:
    """Each side's rows whose key hash is a wanted key's or, with ``repeated``, repeats
    on a side; and its rows with a NULL key part."""
    with as_query(con, keys, list(KEY)) as k:
        wanted = con.sql(_WANTED_HASHES_SQL.format(h=key_hash, keys=k)).pl().drop_nulls()
    if repeated:
        more = [con.sql(_REPEATED_SQL.format(h=key_hash, side=s)).pl() for s in sides]
        wanted = pl.concat([wanted, *more])
    with as_query(con, wanted.unique(), ["h"]) as w:
        return [
            con.sql(_FETCH_SQL.format(cols=", ".join(cols), h=key_hash, side=q, wanted=w)).pl()
            for q in sides
        ]


def _on_lines(
    con: duckdb.DuckDBPyConnection, side: pl.DataFrame | str, lines: pl.Series, cols: list[str]
) -> pl.DataFrame:
    """A side's rows on ``lines``: a frame filtered in polars (cheaper than DuckDB
    scanning all of it), a query in DuckDB."""
    wanted = lines.unique()
    if isinstance(side, pl.DataFrame):
        return side.select(cols).filter(pl.col("origin_line").is_in(wanted.implode()))
    with as_query(con, wanted.to_frame("n"), ["n"]) as n:
        rows: pl.DataFrame = con.sql(
            f"SELECT {', '.join(cols)} FROM ({side}) WHERE origin_line IN (SELECT n FROM ({n}))"
        ).pl()
    return rows


def _of_keys(rows: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``keys``, and those with a NULL key part (always wanted: alone)."""
    partial = pl.any_horizontal(pl.col(k).is_null() for k in KEY)
    return pl.concat([rows.filter(partial), rows.join(keys, on=list(KEY), how="semi")])
