"""The standard bill: every channel parser produces exactly these columns.

Declared as a pandera model (the contract) apart from how rows get there (the
parsers). Money is integer minor units of ``currency``; times are UTC and the
business date is the trade's local date in the channel's time zone.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import Date, DateTime
from pandera.errors import SchemaErrors

from recon.currency import CURRENCY_EXPONENTS

TXN_TYPES = ("payment", "refund")


class StandardBill(pa.DataFrameModel):
    """One row per channel transaction (a payment or a refund)."""

    channel: str = pa.Field(description="Channel name from rules/, e.g. wechatpay, alipay.")
    channel_txn_id: str = pa.Field(
        description="Channel's transaction number of the payment (微信订单号 / 支付宝交易号); "
        "refunds carry their payment's number."
    )
    channel_refund_id: str = pa.Field(description="Channel's refund number; empty for payments.")
    merchant_order_id: str = pa.Field(str_length={"min_value": 1}, description="商户订单号.")
    merchant_refund_id: str = pa.Field(
        description="商户退款单号 / 退款请求号; empty for payments. Key part with the order id."
    )
    txn_type: str = pa.Field(isin=TXN_TYPES, description="payment | refund.")
    amount_minor: int = pa.Field(
        ge=0, description="Order or refund amount, positive, integer minor units of currency."
    )
    fee_minor: int = pa.Field(
        description="Channel fee in minor units; positive when charged, negative when returned."
    )
    currency: str = pa.Field(isin=sorted(CURRENCY_EXPONENTS), description="ISO 4217 code.")
    channel_status: str = pa.Field(description="Status as the channel wrote it.")
    status: str = pa.Field(description="Our status vocabulary, mapped through rules/.")
    trade_time: DateTime = pa.Field(
        dtype_kwargs={"time_unit": "us", "time_zone": "UTC"},
        description="When the channel completed the payment or refund, UTC.",
    )
    business_date: Date = pa.Field(description="trade_time's date in the channel time zone.")
    source_file: str = pa.Field(description="Bill file the row came from.")
    source_line: int = pa.Field(ge=1, description="1-based physical line in that file.")

    class Config:
        strict = True
        ordered = True
        coerce = False


COLUMNS: tuple[str, ...] = tuple(StandardBill.to_schema().columns)
POLARS_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.String(),
    "channel_txn_id": pl.String(),
    "channel_refund_id": pl.String(),
    "merchant_order_id": pl.String(),
    "merchant_refund_id": pl.String(),
    "txn_type": pl.String(),
    "amount_minor": pl.Int64(),
    "fee_minor": pl.Int64(),
    "currency": pl.String(),
    "channel_status": pl.String(),
    "status": pl.String(),
    "trade_time": pl.Datetime("us", "UTC"),
    "business_date": pl.Date(),
    "source_file": pl.String(),
    "source_line": pl.Int64(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_line": pl.Int64(),
    "column": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def validate(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate with pandera; rows failing a data check go to quarantine, not away.

    Returns (valid rows, quarantine rows). A wrong set of columns or dtypes is a
    programming error in a parser and raises.
    """
    df = df.select(COLUMNS)
    try:
        StandardBill.validate(df, lazy=True)
        return df, empty_quarantine()
    except SchemaErrors as err:
        fc = err.failure_cases
        if "index" not in fc.columns or fc.filter(pl.col("index").is_null()).height:
            raise
        bad = (
            fc.select(
                pl.col("index").cast(pl.Int64),
                pl.col("column").cast(pl.String),
                (
                    pl.lit("failed check ")
                    + pl.col("check").cast(pl.String)
                    + pl.lit(": ")
                    + pl.col("failure_case").cast(pl.String)
                ).alias("reason"),
            )
            .group_by("index", maintain_order=True)
            .first()
        )
    indexed = df.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    q = indexed.join(bad, on="index", how="inner").select(
        "source_file",
        "source_line",
        "column",
        "reason",
        pl.lit(None, pl.String).alias("raw"),
    )
    valid = indexed.join(bad, on="index", how="anti").drop("index")
    return valid, q
