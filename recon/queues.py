"""Turn a diff into the three analyst queues (本地丢失, 渠道丢失, 数据差错)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from recon.engine import DiffResult
from recon.money import format_minor_expr

QUEUES = ("local_missing", "channel_missing", "field_mismatch")

_KEY = ["txn_type", "merchant_order_id", "merchant_refund_id"]
_LINEAGE = ["bill_file", "bill_line", "ledger_file", "ledger_row"]
MISSING_COLUMNS = [
    "channel", "business_date", *_KEY, "channel_txn_id", "amount", "currency",
    "amount_minor", "status", *_LINEAGE,
]  # fmt: skip
MISMATCH_COLUMNS = [
    "channel", "business_date", *_KEY, "channel_txn_id", "amount", "currency",
    "amount_minor", "field", "ledger_value", "channel_value", *_LINEAGE,
]  # fmt: skip


@dataclass
class Queues:
    local_missing: pl.DataFrame
    channel_missing: pl.DataFrame
    field_mismatch: pl.DataFrame
    ledger_unsettled: pl.DataFrame  # not a break: shown in the summary only

    def items(self) -> list[tuple[str, pl.DataFrame]]:
        return [(q, getattr(self, q)) for q in QUEUES]

    @property
    def has_breaks(self) -> bool:
        return any(df.height for _, df in self.items())


def _missing(
    result: DiffResult, outcome: str, side: str, channel: str, day: dt.date
) -> pl.DataFrame:
    p = side  # "b_" for the bill's values, "l_" for the ledger's
    return (
        result.outcome(outcome)
        .with_columns(
            pl.lit(channel).alias("channel"),
            pl.lit(day).alias("business_date"),
            pl.col(f"{p}channel_txn_id").alias("channel_txn_id"),
            format_minor_expr(pl.col(f"{p}amount_minor"), pl.col(f"{p}exponent")).alias("amount"),
            pl.col(f"{p}currency").alias("currency"),
            pl.col(f"{p}amount_minor").alias("amount_minor"),
            pl.col(f"{p}status").alias("status"),
        )
        .select(MISSING_COLUMNS)
        .sort("bill_line" if p == "b_" else "ledger_row")
    )


def _mismatch(result: DiffResult, channel: str, day: dt.date) -> pl.DataFrame:
    m = result.mismatches
    is_amount = pl.col("field") == "amount"
    return m.with_columns(
        pl.lit(channel).alias("channel"),
        pl.lit(day).alias("business_date"),
        pl.coalesce(pl.col("b_channel_txn_id"), pl.col("l_channel_txn_id")).alias("channel_txn_id"),
        format_minor_expr(pl.col("b_amount_minor"), pl.col("b_exponent")).alias("amount"),
        pl.col("b_currency").alias("currency"),
        pl.col("b_amount_minor").alias("amount_minor"),
        pl.when(is_amount)
        .then(format_minor_expr(pl.col("l_amount_minor"), pl.col("l_exponent")))
        .otherwise(pl.col("l_val"))
        .alias("ledger_value"),
        pl.when(is_amount)
        .then(format_minor_expr(pl.col("b_amount_minor"), pl.col("b_exponent")))
        .otherwise(pl.col("b_val"))
        .alias("channel_value"),
    ).select(MISMATCH_COLUMNS)


def build_queues(result: DiffResult, channel: str, day: dt.date) -> Queues:
    return Queues(
        local_missing=_missing(result, "local_missing", "b_", channel, day),
        channel_missing=_missing(result, "channel_missing", "l_", channel, day),
        field_mismatch=_mismatch(result, channel, day),
        ledger_unsettled=_missing(result, "ledger_unsettled", "l_", channel, day),
    )
