"""The both-ways diff: one set-based full outer join inside DuckDB.

Rows are keyed by (txn_type, merchant_order_id, merchant_refund_id) within one
channel. A key repeated on one side is paired by order of appearance (its
occurrence number), so a second copy of a payment is a break of its own rather
than a cross product. Every row of either side lands in exactly one of:
matched, local_missing (bill only), channel_missing (ledger only) or, for
ledger rows in statuses the channel never bills (CLOSED, FAILED...),
ledger_unsettled, which is not a break. Matched pairs whose compared fields
differ give one field_mismatch row per field.

The sides are frames or DuckDB queries (Parquet parts of a whole day): the joins run
in DuckDB, which spills to its temp directory beyond its memory limit. A first, narrow
join (recon.narrow: key, compared values, line) finds the few keys whose rows may
not pair off equal; only their rows leave DuckDB, to be paired whole here (every row,
with keep_matched).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from recon.duck import as_query
from recon.narrow import narrow
from recon.sides import KEY, SIDE_SCHEMA

# field name as in the ledger contract -> how to compare.
COMPARED_FIELDS = ("amount", "currency", "status", "channel_txn_id")

# One row per pairing of the full outer join: both rows' columns side by side (key
# columns from the bill row, else the ledger row) and which rows are there. Only the
# pairings wanted leave DuckDB (``{wanted}``: by default all but the matched-and-equal,
# the bulk of a day), with the number of pairings and of each side's rows: those counts,
# got in the same pass, are what let the join run on the key alone (see diff).
_PAIRS_SQL = """
WITH
l AS ({l_side}),
b AS ({b_side}),
j AS (
SELECT
  coalesce(b.txn_type, l.txn_type) AS txn_type,
  coalesce(b.merchant_order_id, l.merchant_order_id) AS merchant_order_id,
  coalesce(b.merchant_refund_id, l.merchant_refund_id) AS merchant_refund_id,
  coalesce(b.occ, l.occ) AS occ,
  l.present AS l_present, b.present AS b_present,
  b.txn_type <> l.txn_type OR b.merchant_order_id <> l.merchant_order_id
    OR b.merchant_refund_id <> l.merchant_refund_id AS collision,
  l.channel_txn_id AS l_channel_txn_id, b.channel_txn_id AS b_channel_txn_id,
  l.amount_minor AS l_amount_minor, b.amount_minor AS b_amount_minor,
  l.exponent AS l_exponent, b.exponent AS b_exponent,
  l.currency AS l_currency, b.currency AS b_currency,
  l.status AS l_status, b.status AS b_status,
  l.origin_file AS ledger_file, l.origin_line AS ledger_row,
  b.origin_file AS bill_file, b.origin_line AS bill_line
FROM b FULL OUTER JOIN l ON {on}
)
SELECT
  (SELECT count(*) FROM ({ledger})) AS ledger_rows,
  (SELECT count(*) FROM ({bill})) AS bill_rows,
  count(*) AS pairings,
  list(j) FILTER (WHERE {wanted}) AS wanted
FROM j
"""
# The first join is on a hash of the key (one integer: cheaper than three strings); a
# missing part makes it NULL, matching nothing, as in a join on the parts themselves.
# Pairings of different keys with one hash are kept (``collision``) and send the diff to
# the join on the key itself.
_KEY_HASH = (
    "CASE WHEN txn_type IS NULL OR merchant_order_id IS NULL OR merchant_refund_id IS NULL "
    "THEN NULL ELSE hash(txn_type, merchant_order_id, merchant_refund_id) END"
)
_ON_HASH = "b.h = l.h AND b.occ = l.occ"
_ON_KEY = (
    "b.txn_type = l.txn_type AND b.merchant_order_id = l.merchant_order_id "
    "AND b.merchant_refund_id = l.merchant_refund_id AND b.occ = l.occ"
)
# A side for the join on the key alone: every row a first occurrence.
_SIDE = "SELECT {cols}, CAST(1 AS BIGINT) AS occ, {h} AS h, TRUE AS present FROM ({query})"
# Copies are ordered by line and file, then (for rows with no line or sharing one,
# which real sides do not have) by their compared values, NULLs last, here and in
# _number_lone_copies alike: a copy's number depends neither on the path that pairs it
# nor on the order rows arrive in.
_COPY_ORDER = (
    "origin_line", "origin_file",
    "channel_txn_id", "amount_minor", "exponent", "currency", "status",
)  # fmt: skip
# A side whose repeated keys are numbered in order of appearance (line, then file). Only
# the rows whose key hash repeats (few) go through the window, which sorts what it gets;
# a hash shared by two keys only numbers more rows, each within its own key.
_NUMBERED_SIDE = """
WITH
s AS MATERIALIZED (SELECT {cols}, {h} AS h FROM ({query})),
r AS (SELECT h FROM s WHERE h IS NOT NULL GROUP BY h HAVING count(*) > 1)
SELECT {cols}, CAST(1 AS BIGINT) AS occ, h, TRUE AS present
FROM s WHERE h IS NOT NULL AND h NOT IN (SELECT h FROM r)
UNION ALL
SELECT {cols},
  row_number() OVER (
    PARTITION BY txn_type, merchant_order_id, merchant_refund_id
    ORDER BY {order}
  ) AS occ,
  h, TRUE AS present
FROM s WHERE h IS NULL OR h IN (SELECT h FROM r)
"""
# Whether a pairing is wanted: a row alone, a collision, or a matched pair with a field
# to report (the tests of _MISMATCH_SQL, on integers instead of their text, written so
# that an equal pair fails each at its first, cheap comparison).
_UNMATCHED_OR_DIFFERING = """
l_present IS NULL OR b_present IS NULL OR collision
OR NOT coalesce(l_amount_minor = b_amount_minor AND l_exponent = b_exponent, FALSE)
  AND (l_amount_minor * CAST(10 ** (3 - l_exponent) AS BIGINT)) IS NOT NULL
  AND (l_amount_minor * CAST(10 ** (3 - l_exponent) AS BIGINT))
    IS DISTINCT FROM (b_amount_minor * CAST(10 ** (3 - b_exponent) AS BIGINT))
OR coalesce(l_currency <> b_currency, l_currency IS NOT NULL)
OR coalesce(l_status <> b_status, l_status IS NOT NULL)
OR coalesce(l_channel_txn_id <> b_channel_txn_id, l_channel_txn_id IS NOT NULL)
  AND l_channel_txn_id <> ''
"""
# The columns of a pairing as the diff gives it.
PAIRING_COLUMNS = (
    *KEY, "occ", "outcome",
    "l_channel_txn_id", "b_channel_txn_id", "l_amount_minor", "b_amount_minor",
    "l_exponent", "b_exponent", "l_currency", "b_currency", "l_status", "b_status",
    "ledger_file", "ledger_row", "bill_file", "bill_line",
)  # fmt: skip

# Amounts are compared as values: minor units scaled to three decimals, so a
# currency mix-up between CNY and JPY shows in amount as well as currency.
_MISMATCH_SQL = """
SELECT j.*, f.field, f.l_val, f.b_val FROM joined j,
LATERAL (VALUES
  ('amount',
   CAST(l_amount_minor * CAST(10 ** (3 - l_exponent) AS BIGINT) AS VARCHAR),
   CAST(b_amount_minor * CAST(10 ** (3 - b_exponent) AS BIGINT) AS VARCHAR)),
  ('currency', l_currency, b_currency),
  ('status', l_status, b_status),
  ('channel_txn_id', nullif(l_channel_txn_id, ''), b_channel_txn_id)
) AS f(field, l_val, b_val)
WHERE j.outcome = 'matched' AND f.l_val IS NOT NULL AND f.l_val IS DISTINCT FROM f.b_val
ORDER BY j.bill_line, f.field
"""


OUTCOMES = ("matched", "local_missing", "channel_missing", "ledger_unsettled")


@dataclass
class DiffResult:
    counts: dict[str, int]  # rows per outcome
    unmatched: pl.DataFrame  # every pairing whose outcome is not matched
    mismatches: pl.DataFrame  # one row per differing field of matched pairs
    matched: pl.DataFrame | None = None  # only when asked for: it is the bulk of a day

    def outcome(self, name: str) -> pl.DataFrame:
        if name == "matched":
            if self.matched is None:
                raise ValueError("diff(..., keep_matched=True) keeps matched pairs")
            return self.matched
        return self.unmatched.filter(pl.col("outcome") == name)


def diff(
    ledger: pl.DataFrame | str,
    bill: pl.DataFrame | str,
    settled_statuses: Sequence[str] = ("SUCCESS",),
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    keep_matched: bool = False,
) -> DiffResult:
    """Diff two side views of one channel-day: each a frame in recon.sides.SIDE_SCHEMA
    or a DuckDB query yielding those columns (recon.sides.ledger_side_sql /
    bill_side_sql). Give a recon.duck.work_connection to cap DuckDB's memory."""
    own = con is None
    if con is None:
        con = duckdb.connect()
        # Nothing here depends on the order rows leave the join (mismatches are sorted).
        con.execute("SET preserve_insertion_order = false")
    cols = list(SIDE_SCHEMA)
    try:
        if keep_matched:
            with as_query(con, ledger, cols) as lq, as_query(con, bill, cols) as bq:
                b_rows, pairs = _pairings(con, lq, bq, keep_matched=True)
        else:
            # Only the rows of keys that may not pair off equal (few) are paired whole.
            few = narrow(con, ledger, bill, _KEY_HASH, cols)
            b_rows = few.bill_rows
            with as_query(con, few.ledger, cols) as lf, as_query(con, few.bill, cols) as bf:
                _, pairs = _pairings(con, lf, bf, keep_matched=False)
        pairs = pairs.with_columns(_outcome(settled_statuses)).select(PAIRING_COLUMNS)
        outcome = pl.col("outcome")
        counts = dict.fromkeys(OUTCOMES, 0) | {
            str(k): int(v) for k, v in pairs.group_by("outcome").len().rows()
        }
        # (key, occurrence) is unique on each side, so every bill row is in exactly one
        # pairing: the matched ones are the bill rows not alone in theirs.
        counts["matched"] = b_rows - counts["local_missing"]
        mismatches = _mismatches(con, pairs.filter(outcome == "matched"))
    finally:
        if own:
            con.close()
    return DiffResult(
        counts=counts,
        unmatched=pairs.filter(outcome != "matched"),
        mismatches=mismatches,
        matched=pairs.filter(outcome == "matched") if keep_matched else None,
    )


def _pairings(
    con: duckdb.DuckDBPyConnection, lq: str, bq: str, *, keep_matched: bool
) -> tuple[int, pl.DataFrame]:
    """The bill's row count and the wanted pairings (all when ``keep_matched``, else all
    but the matched-and-equal) of two side queries, paired whole."""
    cols = ", ".join(SIDE_SCHEMA)
    order = ", ".join(f"{c} NULLS LAST" for c in _COPY_ORDER)

    def pairings(numbered: bool, on: str) -> tuple[int, int, int, pl.DataFrame]:
        side = _NUMBERED_SIDE if numbered else _SIDE
        sql = _PAIRS_SQL.format(
            l_side=side.format(cols=cols, h=_KEY_HASH, query=lq, order=order),
            b_side=side.format(cols=cols, h=_KEY_HASH, query=bq, order=order),
            ledger=lq,
            bill=bq,
            on=on,
            wanted="TRUE" if keep_matched else _UNMATCHED_OR_DIFFERING,
        )
        got = con.sql(sql).pl()
        l_rows, b_rows, n = (int(got[c][0]) for c in ("ledger_rows", "bill_rows", "pairings"))
        wanted = got.select(pl.col("wanted").explode()).drop_nulls().unnest("wanted")
        return l_rows, b_rows, n, wanted

    # First the join on the key (its hash) alone. When no key present on both sides
    # repeats on either, each row is in exactly one pairing: there are as many
    # pairings as ledger rows plus bill rows alone, and as bill rows plus ledger
    # rows alone. A key repeated on one side and present on the other pairs each
    # copy with each (more pairings): only then are the copies numbered (occ) and
    # paired by number. On the hash still, unless two keys shared one: with none
    # seen, every hash found on both sides is of one key.
    l_rows, b_rows, n, pairs = pairings(False, _ON_HASH)
    bill_alone = pairs.filter(pl.col("l_present").is_null()).height
    ledger_alone = pairs.filter(pl.col("b_present").is_null()).height
    collided = pairs.filter(pl.col("collision")).height > 0
    if not collided and n - bill_alone == l_rows and n - ledger_alone == b_rows:
        return b_rows, _number_lone_copies(pairs)
    _, b_rows, _, pairs = pairings(True, _ON_KEY if collided else _ON_HASH)
    return b_rows, pairs


def _mismatches(con: duckdb.DuckDBPyConnection, matched: pl.DataFrame) -> pl.DataFrame:
    """One row per differing field of the matched pairs (a pairing's columns, then field,
    l_val, b_val), by bill line and field."""
    if matched.is_empty():
        return matched.with_columns(
            pl.lit(None, pl.String).alias(c) for c in ("field", "l_val", "b_val")
        )
    con.register("joined", matched)
    try:
        out: pl.DataFrame = con.sql(_MISMATCH_SQL).pl()
    finally:
        con.unregister("joined")
    return out


def _outcome(settled: Sequence[str]) -> pl.Expr:
    ledger_alone = pl.col("b_present").is_null()
    return (
        pl.when(ledger_alone & pl.col("l_status").is_in(list(settled)))
        .then(pl.lit("channel_missing"))
        .when(ledger_alone)
        .then(pl.lit("ledger_unsettled"))
        .when(pl.col("l_present").is_null())
        .then(pl.lit("local_missing"))
        .otherwise(pl.lit("matched"))
        .alias("outcome")
    )


def _number_lone_copies(pairs: pl.DataFrame) -> pl.DataFrame:
    """Occurrence numbers after a join on the key alone that paired each row once: a key
    with rows on both sides occurs once on each; the copies of a key on one side only are
    all among the pairings, alone, and are numbered there in order of appearance."""
    bill_alone = pl.col("l_present").is_null()
    ledger_alone = pl.col("b_present").is_null()
    # A lone row's columns are on its own side: bill_*/b_*, else ledger_*/l_*.
    own = {"origin_line": ("bill_line", "ledger_row"), "origin_file": ("bill_file", "ledger_file")}
    order = [pl.coalesce(*own.get(c, (f"b_{c}", f"l_{c}"))) for c in _COPY_ORDER]
    occ = pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(
        [*KEY, bill_alone.alias("_b"), ledger_alone.alias("_l")], order_by=order, nulls_last=True
    )
    return pairs.with_columns(
        pl.when(bill_alone | ledger_alone).then(occ).otherwise(pl.col("occ")).alias("occ")
    )
