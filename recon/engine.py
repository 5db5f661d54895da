"""The both-ways diff: one set-based full outer join inside DuckDB.

Rows are keyed by (txn_type, merchant_order_id, merchant_refund_id) within one
channel. A key repeated on one side is paired by order of appearance (its
occurrence number), so a second copy of a payment is a break of its own rather
than a cross product. Every row of either side lands in exactly one of:
matched, local_missing (bill only), channel_missing (ledger only) or, for
ledger rows in statuses the channel never bills (CLOSED, FAILED...),
ledger_unsettled, which is not a break. Matched pairs whose compared fields
differ give one field_mismatch row per field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from recon.sides import KEY, SIDE_SCHEMA

# field name as in the ledger contract -> how to compare.
COMPARED_FIELDS = ("amount", "currency", "status", "channel_txn_id")

# One row per pairing: which row of each side (``l_row`` / ``b_row``, row numbers of the
# registered frames), its outcome, and whether a matched pair has any field to report
# (the same tests as _MISMATCH_SQL, on integers instead of their text). Only the pairings
# wanted (``{where}``) leave DuckDB, and only they are built in full: the bulk of a day is
# matched and equal, and its count follows from the rest.
_PAIRS_SQL = """
SELECT * FROM (
WITH
l AS (SELECT *, {l_occ} AS occ FROM ledger_side),
b AS (SELECT *, {b_occ} AS occ FROM bill_side)
SELECT
  l._row AS l_row, b._row AS b_row,
  coalesce(b.occ, l.occ) AS occ,
  CASE
    WHEN b.txn_type IS NULL AND list_contains($settled, l.status) THEN 'channel_missing'
    WHEN b.txn_type IS NULL THEN 'ledger_unsettled'
    WHEN l.txn_type IS NULL THEN 'local_missing'
    ELSE 'matched'
  END AS outcome,
  b.txn_type IS NOT NULL AND l.txn_type IS NOT NULL AND (
    (l.amount_minor * CAST(10 ** (3 - l.exponent) AS BIGINT)) IS NOT NULL
      AND (l.amount_minor * CAST(10 ** (3 - l.exponent) AS BIGINT))
        IS DISTINCT FROM (b.amount_minor * CAST(10 ** (3 - b.exponent) AS BIGINT))
    OR l.currency IS NOT NULL AND l.currency IS DISTINCT FROM b.currency
    OR l.status IS NOT NULL AND l.status IS DISTINCT FROM b.status
    OR nullif(l.channel_txn_id, '') IS NOT NULL
      AND nullif(l.channel_txn_id, '') IS DISTINCT FROM b.channel_txn_id
  ) AS differs
FROM b FULL OUTER JOIN l USING (txn_type, merchant_order_id, merchant_refund_id, occ)
) {where}
"""
_UNMATCHED_OR_DIFFERING = "WHERE l_row IS NULL OR b_row IS NULL OR differs"
# A key repeated on one side is paired in order of appearance.
_OCC = "row_number() OVER (PARTITION BY txn_type, merchant_order_id, merchant_refund_id ORDER BY origin_line)"
_ONCE = "CAST(1 AS BIGINT)"  # no key repeats on this side: every occurrence is the first

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
    ledger: pl.DataFrame,
    bill: pl.DataFrame,
    settled_statuses: Sequence[str] = ("SUCCESS",),
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    keep_matched: bool = False,
) -> DiffResult:
    """Diff two side views (recon.sides.SIDE_SCHEMA) of one channel-day."""
    own = con is None
    if con is None:
        con = duckdb.connect()
        # Nothing here depends on the order rows leave the join (mismatches are sorted).
        con.execute("SET preserve_insertion_order = false")
    lside = ledger.select(list(SIDE_SCHEMA))
    bside = bill.select(list(SIDE_SCHEMA))
    l_repeats, b_repeats = _repeats_a_key(lside), _repeats_a_key(bside)
    try:
        con.register("ledger_side", _joinable(lside, l_repeats))
        con.register("bill_side", _joinable(bside, b_repeats))
        sql = _PAIRS_SQL.format(
            l_occ=_OCC if l_repeats else _ONCE,
            b_occ=_OCC if b_repeats else _ONCE,
            where="" if keep_matched else _UNMATCHED_OR_DIFFERING,
        )
        wanted = con.sql(sql, params={"settled": list(settled_statuses)}).pl()
    finally:
        con.unregister("ledger_side")
        con.unregister("bill_side")
    outcome = pl.col("outcome")
    rows = wanted.group_by("outcome").len().rows()
    counts = dict.fromkeys(OUTCOMES, 0) | {str(k): int(n) for k, n in rows}
    if not keep_matched:
        # (key, occurrence) is unique on each side, so every bill row is in exactly one
        # pairing: the matched ones are the bill rows not among the unmatched pairings.
        bill_unmatched = wanted.filter((outcome != "matched") & pl.col("b_row").is_not_null())
        counts["matched"] = bside.height - bill_unmatched.height
    joined = _joined(wanted, lside, bside)
    unmatched = joined.filter(outcome != "matched")
    try:
        con.register("joined", joined.filter(pl.col("differs")) if keep_matched else joined)
        mismatches = con.sql(_MISMATCH_SQL).pl().drop("differs")
    finally:
        con.unregister("joined")
        if own:
            con.close()
    matched = joined.filter(outcome == "matched").drop("differs") if keep_matched else None
    return DiffResult(
        counts=counts, unmatched=unmatched.drop("differs"), mismatches=mismatches, matched=matched
    )


def _joinable(side: pl.DataFrame, repeats: bool) -> pl.DataFrame:
    """What the pairing query reads of a side: row number, key, compared fields (and the
    line, to number repeated keys); handing DuckDB less is faster."""
    compared = ["amount_minor", "exponent", "currency", "status", "channel_txn_id"]
    line = ["origin_line"] if repeats else []
    return side.select(*KEY, *compared, *line).with_row_index("_row")


def _repeats_a_key(side: pl.DataFrame) -> bool:
    """Whether some key may occur twice: distinct row hashes prove every key unique;
    equal hashes (a repeat or, rarely, a collision) take the occurrence numbering."""
    if side.height < 2:
        return False
    return bool(side.select(KEY).hash_rows().n_unique() < side.height)


def _joined(pairs: pl.DataFrame, ledger: pl.DataFrame, bill: pl.DataFrame) -> pl.DataFrame:
    """The pairings in full: both sides' values side by side (the columns of one row of the
    full outer join), key columns from the bill row, else the ledger row."""
    lv = ledger[pairs.get_column("l_row")] if pairs.height else ledger.clear()
    bv = bill[pairs.get_column("b_row")] if pairs.height else bill.clear()
    return pl.DataFrame(
        [
            *(bv.get_column(k).fill_null(lv.get_column(k)) for k in KEY),
            pairs.get_column("occ"),
            pairs.get_column("outcome"),
            lv.get_column("channel_txn_id").rename("l_channel_txn_id"),
            bv.get_column("channel_txn_id").rename("b_channel_txn_id"),
            lv.get_column("amount_minor").rename("l_amount_minor"),
            bv.get_column("amount_minor").rename("b_amount_minor"),
            lv.get_column("exponent").rename("l_exponent"),
            bv.get_column("exponent").rename("b_exponent"),
            lv.get_column("currency").rename("l_currency"),
            bv.get_column("currency").rename("b_currency"),
            lv.get_column("status").rename("l_status"),
            bv.get_column("status").rename("b_status"),
            lv.get_column("origin_file").rename("ledger_file"),
            lv.get_column("origin_line").rename("ledger_row"),
            bv.get_column("origin_file").rename("bill_file"),
            bv.get_column("origin_line").rename("bill_line"),
            pairs.get_column("differs"),
        ]
    )
