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

from recon.sides import SIDE_SCHEMA

# field name as in the ledger contract -> how to compare.
COMPARED_FIELDS = ("amount", "currency", "status", "channel_txn_id")

_SQL = """
WITH
l AS (
  SELECT *, row_number() OVER (
    PARTITION BY txn_type, merchant_order_id, merchant_refund_id ORDER BY origin_line) AS occ
  FROM ledger_side),
b AS (
  SELECT *, row_number() OVER (
    PARTITION BY txn_type, merchant_order_id, merchant_refund_id ORDER BY origin_line) AS occ
  FROM bill_side)
SELECT
  coalesce(b.txn_type, l.txn_type) AS txn_type,
  coalesce(b.merchant_order_id, l.merchant_order_id) AS merchant_order_id,
  coalesce(b.merchant_refund_id, l.merchant_refund_id) AS merchant_refund_id,
  coalesce(b.occ, l.occ) AS occ,
  CASE
    WHEN b.txn_type IS NULL AND list_contains($settled, l.status) THEN 'channel_missing'
    WHEN b.txn_type IS NULL THEN 'ledger_unsettled'
    WHEN l.txn_type IS NULL THEN 'local_missing'
    ELSE 'matched'
  END AS outcome,
  l.channel_txn_id AS l_channel_txn_id, b.channel_txn_id AS b_channel_txn_id,
  l.amount_minor AS l_amount_minor, b.amount_minor AS b_amount_minor,
  l.exponent AS l_exponent, b.exponent AS b_exponent,
  l.currency AS l_currency, b.currency AS b_currency,
  l.status AS l_status, b.status AS b_status,
  l.origin_file AS ledger_file, l.origin_line AS ledger_row,
  b.origin_file AS bill_file, b.origin_line AS bill_line
FROM b FULL OUTER JOIN l USING (txn_type, merchant_order_id, merchant_refund_id, occ)
"""

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
    con = con or duckdb.connect()
    try:
        con.register("ledger_side", ledger.select(list(SIDE_SCHEMA)))
        con.register("bill_side", bill.select(list(SIDE_SCHEMA)))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE joined AS {_SQL}", {"settled": list(settled_statuses)}
        )
        rows = con.sql("SELECT outcome, count(*) FROM joined GROUP BY ALL").fetchall()
        counts = dict.fromkeys(OUTCOMES, 0) | {str(k): int(n) for k, n in rows}
        unmatched = con.sql("SELECT * FROM joined WHERE outcome <> 'matched'").pl()
        mismatches = con.sql(_MISMATCH_SQL).pl()
        matched = (
            con.sql("SELECT * FROM joined WHERE outcome = 'matched'").pl() if keep_matched else None
        )
        con.execute("DROP TABLE joined")
    finally:
        con.unregister("ledger_side")
        con.unregister("bill_side")
        if own:
            con.close()
    return DiffResult(counts=counts, unmatched=unmatched, mismatches=mismatches, matched=matched)
