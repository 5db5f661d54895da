"""The comparable view of a record, shared by the bill side and the ledger side."""

from __future__ import annotations

import polars as pl

# What the engine compares. origin_* says where the row came from: bill file and
# physical line, or ledger file and data row.
SIDE_SCHEMA: dict[str, pl.DataType] = {
    "merchant_order_id": pl.String(),
    "merchant_refund_id": pl.String(),
    "txn_type": pl.String(),
    "channel_txn_id": pl.String(),
    "amount_minor": pl.Int64(),
    "exponent": pl.Int64(),
    "currency": pl.String(),
    "status": pl.String(),
    "origin_file": pl.String(),
    "origin_line": pl.Int64(),
}
KEY = ("txn_type", "merchant_order_id", "merchant_refund_id")


def bill_side(bill: pl.DataFrame) -> pl.DataFrame:
    """Standard bill -> side view."""
    from recon.money import exponent_expr

    return bill.select(
        "merchant_order_id",
        "merchant_refund_id",
        "txn_type",
        "channel_txn_id",
        "amount_minor",
        exponent_expr(pl.col("currency")).alias("exponent"),
        "currency",
        "status",
        pl.col("source_file").alias("origin_file"),
        pl.col("source_line").alias("origin_line"),
    ).cast(SIDE_SCHEMA)  # type: ignore[arg-type]
