"""The comparable view of a record, shared by the bill side and the ledger side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def _exponent_sql(currency: str) -> str:
    """The currency's ISO 4217 exponent in SQL (NULL for an unknown one), one IN list
    per exponent (recon.currency.CURRENCY_EXPONENTS)."""
    from recon.currency import CURRENCY_EXPONENTS

    by_exp: dict[int, list[str]] = {}
    for code, exp in CURRENCY_EXPONENTS.items():
        by_exp.setdefault(exp, []).append(code)
    whens = " ".join(
        f"WHEN {currency} IN ({', '.join(_sql_string(c) for c in sorted(codes))}) THEN {exp}"
        for exp, codes in sorted(by_exp.items())
    )
    return f"CAST(CASE {whens} END AS BIGINT)"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def bill_side_sql(files: Sequence[Path]) -> str:
    """Standard bill parts (recon.schema.POLARS_SCHEMA) -> a DuckDB query of the side
    view (SIDE_SCHEMA columns, in order), as :func:`bill_side` maps a frame."""
    from recon.parts import sql_source

    return (
        "SELECT merchant_order_id, merchant_refund_id, txn_type, channel_txn_id, "
        f"CAST(amount_minor AS BIGINT) AS amount_minor, {_exponent_sql('currency')} AS exponent, "
        "currency, status, source_file AS origin_file, "
        f"CAST(source_line AS BIGINT) AS origin_line FROM {sql_source(files)}"
    )


def ledger_side_sql(files: Sequence[Path]) -> str:
    """Ledger day parts (SIDE_SCHEMA plus created_at) -> a DuckDB query of the side view."""
    from recon.parts import sql_source

    return f"SELECT {', '.join(SIDE_SCHEMA)} FROM {sql_source(files)}"
