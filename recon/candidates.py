"""Today's break candidates for one channel-day, classified, before the store sees them.

From the day's diff: local_missing (or duplicate_payment / duplicate_refund when
the channel billed the key twice, in one bill or across bills), channel_missing,
field_mismatch per field (amounts classified as partial or over-payment), and
from the bill alone: fee_mismatch against the rate schedule and
refund_exceeds_payment when the refunds of an order pass what was paid.
Missing items within the timing window before the cut-off start as
pending_timing.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from recon.channel_config import FeeRules
from recon.engine import DiffResult
from recon.money import format_minor_expr
from recon.queues import Queues
from recon.rules import Channel

KEY = ["txn_type", "merchant_order_id", "merchant_refund_id"]
CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "txn_type": pl.String(),
    "merchant_order_id": pl.String(),
    "merchant_refund_id": pl.String(),
    "kind": pl.String(),
    "field": pl.String(),
    "occurrence": pl.Int64(),
    "state": pl.String(),
    "reason_code": pl.String(),
    "amount_minor": pl.Int64(),
    "currency": pl.String(),
    "amount": pl.String(),
    "ledger_value": pl.String(),
    "channel_value": pl.String(),
    "channel_txn_id": pl.String(),
    "bill_file": pl.String(),
    "bill_line": pl.Int64(),
    "ledger_file": pl.String(),
    "ledger_row": pl.Int64(),
}


def cutoff(channel: Channel, day: dt.date) -> dt.datetime:
    """The end of the business day: local midnight after it, in UTC."""
    local = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), ZoneInfo(channel.timezone))
    return local.astimezone(dt.UTC)


def _finish(df: pl.DataFrame) -> pl.DataFrame:
    missing = {c: t for c, t in CANDIDATE_SCHEMA.items() if c not in df.columns}
    df = df.with_columns(pl.lit(None, t).alias(c) for c, t in missing.items())
    return df.select(pl.col(c).cast(t) for c, t in CANDIDATE_SCHEMA.items())


def _occurrence(df: pl.DataFrame, order_by: str, extra: list[str] | None = None) -> pl.DataFrame:
    """nth unmatched copy of a key (duplicates keep distinct identities)."""
    keys = KEY + (extra or [])
    return df.sort(order_by).with_columns(
        (pl.int_range(pl.len()).over(keys) + 1).cast(pl.Int64).alias("occurrence")
    )


def _timing(time_col: str, channel: Channel, day: dt.date) -> tuple[pl.Expr, pl.Expr]:
    near = pl.col(time_col) >= (cutoff(channel, day) - channel.breaks.timing_window)
    state = pl.when(near).then(pl.lit("pending_timing")).otherwise(pl.lit("open"))
    reason = pl.when(near).then(pl.lit("TIMING_CUTOFF")).otherwise(pl.lit(""))
    return state, reason


def _rows_of_keys(rows: pl.LazyFrame, keys: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """The rows of ``keys`` (a few) from a whole day's lazy rows: a streaming scan filtered
    on the order id (pushed into the Parquet reader), then the exact key match in memory."""
    keys = keys.select(KEY).unique()
    if keys.height == 0:
        return rows.select(columns).clear().collect()
    orders = keys.get_column("merchant_order_id").unique().implode()
    near = (
        rows.filter(pl.col("merchant_order_id").is_in(orders))
        .select(columns)
        .collect(engine="streaming")
    )
    return near.join(keys, on=KEY, how="semi")


def local_missing(
    result: DiffResult,
    bill_rows: pl.LazyFrame,
    billed_before: pl.DataFrame,
    channel: Channel,
    day: dt.date,
) -> pl.DataFrame:
    """Bill rows the ledger lacks; ``billed_before`` holds those of their keys (KEY) that
    an earlier day's bill already had (a duplicate across bills)."""
    lm = result.outcome("local_missing")
    rows = _rows_of_keys(bill_rows, lm, [*KEY, "source_line", "trade_time"])
    times = rows.select(pl.col("source_line").alias("bill_line"), "trade_time")
    copies = rows.group_by(KEY).len("copies_today")
    df = (
        lm.join(times, on="bill_line", how="left")
        .join(copies, on=KEY, how="left")
        .join(
            billed_before.select(KEY).unique().with_columns(pl.lit(True).alias("billed_before")),
            on=KEY,
            how="left",
        )
    )
    state, reason = _timing("trade_time", channel, day)
    dup = (pl.col("copies_today") > 1) | pl.col("billed_before").fill_null(False)
    df = df.with_columns(
        pl.when(dup)
        .then(pl.concat_str(pl.lit("duplicate_"), pl.col("txn_type")))
        .otherwise(pl.lit("local_missing"))
        .alias("kind"),
        pl.when(dup).then(pl.lit("open")).otherwise(state).alias("state"),
        pl.when(pl.col("copies_today") > 1)
        .then(pl.lit("DUPLICATE_IN_BILL"))
        .when(dup)
        .then(pl.lit("DUPLICATE_ACROSS_BILLS"))
        .otherwise(reason)
        .alias("reason_code"),
    )
    return _finish(
        _side_values(df, "b_")
        .with_columns(pl.lit("").alias("field"))
        .pipe(_occurrence, "bill_line")
    )


def channel_missing(
    result: DiffResult, ledger_rows: pl.LazyFrame, channel: Channel, day: dt.date
) -> pl.DataFrame:
    cm = result.outcome("channel_missing")
    times = ledger_rows.select(pl.col("origin_line").alias("ledger_row"), "created_at")
    if cm.height == 0:
        times = times.clear()
    else:  # a streaming scan that keeps only the few rows asked for
        times = times.filter(pl.col("ledger_row").is_in(cm.get_column("ledger_row").implode()))
    df = cm.join(times.collect(engine="streaming"), on="ledger_row", how="left")
    state, reason = _timing("created_at", channel, day)
    df = df.with_columns(
        pl.lit("channel_missing").alias("kind"), state.alias("state"), reason.alias("reason_code")
    )
    return _finish(
        _side_values(df, "l_")
        .with_columns(pl.lit("").alias("field"))
        .pipe(_occurrence, "ledger_row")
    )


def _side_values(df: pl.DataFrame, p: str) -> pl.DataFrame:
    return df.with_columns(
        pl.col(f"{p}amount_minor").alias("amount_minor"),
        pl.col(f"{p}currency").alias("currency"),
        format_minor_expr(pl.col(f"{p}amount_minor"), pl.col(f"{p}exponent")).alias("amount"),
        pl.col(f"{p}channel_txn_id").alias("channel_txn_id"),
    )


def field_mismatch(queues: Queues) -> pl.DataFrame:
    fm = queues.field_mismatch
    amount = pl.col("field") == "amount"
    lower = pl.col("channel_value").cast(pl.Decimal(38, 3), strict=False) < pl.col(
        "ledger_value"
    ).cast(pl.Decimal(38, 3), strict=False)
    reason = (
        pl.when(amount & (pl.col("txn_type") == "payment") & lower)
        .then(pl.lit("PARTIAL_PAYMENT"))
        .when(amount & (pl.col("txn_type") == "payment"))
        .then(pl.lit("OVERPAYMENT"))
        .when(amount)
        .then(pl.lit("REFUND_AMOUNT_DIFFERS"))
        .otherwise(pl.concat_str(pl.col("field").str.to_uppercase(), pl.lit("_DIFFERS")))
    )
    df = fm.with_columns(
        pl.lit("field_mismatch").alias("kind"),
        pl.lit("open").alias("state"),
        reason.alias("reason_code"),
    )
    return _finish(df.pipe(_occurrence, "bill_line", ["field"]))


def _expected_fee(amount: pl.Expr, fees: FeeRules) -> pl.Expr:
    """round(amount * rate) in integer arithmetic: rate = num / den exactly."""
    num, den = fees.rate.as_integer_ratio()
    scaled = amount * num
    if fees.rounding == "down":
        fee = scaled // den
    elif fees.rounding == "up":
        fee = -((-scaled) // den)
    elif fees.rounding == "half_up":
        fee = (2 * scaled + den) // (2 * den)
    else:  # half_even
        q, r = scaled // den, scaled % den
        fee = pl.when((2 * r > den) | ((2 * r == den) & (q % 2 == 1))).then(q + 1).otherwise(q)
    return fee


def fee_mismatch(
    bill_rows: pl.LazyFrame, fees: FeeRules | None, min_fee_minor: int
) -> pl.DataFrame:
    """Bill rows whose fee is not what the rate schedule says (a streaming filter: only the
    rows that differ are collected). The filter is on expressions, not on a derived column,
    so polars evaluates it in the Parquet reader and decodes the other columns only for
    the rows it keeps."""
    if fees is None:
        return _finish(pl.DataFrame())
    computed = _expected_fee(pl.col("amount_minor"), fees)
    payment_fee = pl.max_horizontal(computed, pl.lit(min_fee_minor))
    refund_fee = -computed if fees.refund_fee == "proportional" else pl.lit(0)
    expected = pl.when(pl.col("txn_type") == "payment").then(payment_fee).otherwise(refund_fee)
    exp = pl.lit(2, pl.Int64)  # fees are in the bill's currency; CNY bills have 2 decimals
    wanted = [*KEY, "channel_txn_id", "amount_minor", "fee_minor", "currency", "source_file"]
    df = (
        bill_rows.filter(pl.col("fee_minor") != expected)
        .select(*wanted, "source_line", expected.alias("expected_fee"))
        .collect(engine="streaming")
    )
    df = df.with_columns(
        pl.lit("fee_mismatch").alias("kind"),
        pl.lit("fee").alias("field"),
        pl.lit("open").alias("state"),
        pl.lit("FEE_RATE").alias("reason_code"),
        format_minor_expr(pl.col("amount_minor"), exp).alias("amount"),
        format_minor_expr(pl.col("expected_fee"), exp).alias("ledger_value"),
        format_minor_expr(pl.col("fee_minor"), exp).alias("channel_value"),
        pl.col("source_file").alias("bill_file"),
        pl.col("source_line").alias("bill_line"),
    )
    return _finish(df.pipe(_occurrence, "bill_line"))


def refund_exceeds_payment(over: pl.DataFrame) -> pl.DataFrame:
    """Orders refunded today whose refunds, over the bills of the days kept, pass what was
    paid.

    ``over`` has one row per such order (recon.bill_history finds them in the store):
    txn_type, merchant_order_id, merchant_refund_id, source_file and source_line of the
    order's last refund today, and ``paid`` / ``refunded`` in minor units over those bills.
    """
    df = over
    exp = pl.lit(2, pl.Int64)
    df = df.with_columns(
        pl.lit("refund_exceeds_payment").alias("kind"),
        pl.lit("").alias("field"),
        pl.lit("open").alias("state"),
        pl.lit("REFUNDS_EXCEED_PAYMENT").alias("reason_code"),
        (pl.col("refunded") - pl.col("paid")).alias("amount_minor"),
        format_minor_expr(pl.col("refunded") - pl.col("paid"), exp).alias("amount"),
        format_minor_expr(pl.col("paid"), exp).alias("ledger_value"),
        format_minor_expr(pl.col("refunded"), exp).alias("channel_value"),
        pl.col("source_file").alias("bill_file"),
        pl.col("source_line").alias("bill_line"),
        pl.lit(1, pl.Int64).alias("occurrence"),
    )
    return _finish(df)


def mark_partial_refunds(cands: pl.DataFrame, bill_rows: pl.LazyFrame) -> pl.DataFrame:
    """Refund breaks of orders refunded more than once today carry PARTIAL_REFUNDS."""
    orders = cands.filter(pl.col("txn_type") == "refund").get_column("merchant_order_id").unique()
    if orders.len() == 0:
        return cands
    several = (
        bill_rows.filter(
            (pl.col("txn_type") == "refund") & pl.col("merchant_order_id").is_in(orders.implode())
        )
        .group_by("merchant_order_id")
        .len("n")
        .filter(pl.col("n") > 1)
        .select("merchant_order_id", pl.lit(True).alias("_several"))
        .collect(engine="streaming")
    )
    return (
        cands.join(several, on="merchant_order_id", how="left")
        .with_columns(
            pl.when(
                pl.col("_several").fill_null(False)
                & (pl.col("txn_type") == "refund")
                & (pl.col("reason_code") == "")
            )
            .then(pl.lit("PARTIAL_REFUNDS"))
            .otherwise(pl.col("reason_code"))
            .alias("reason_code")
        )
        .drop("_several")
    )
