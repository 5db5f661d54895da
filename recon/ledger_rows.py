"""Sort one batch of the raw ledger export: the channel-day's rows, its quarantined
rows, and the rest (other channels, other days).

Most of the cost is per row, so the cheap narrowing comes first (the channel, then
the business day) and whatever depends on a column of few values (channel names,
codes, currencies) is worked out once per value (recon.few_values).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from recon.checks import RowCheck, apply_checks
from recon.currency import CURRENCY_EXPONENTS
from recon.few_values import distinct, lookup, tidied
from recon.ledger_time import created_at_utc
from recon.money import exponents_of, to_minor_by_currency
from recon.schema import QUARANTINE_SCHEMA
from recon.sides import SIDE_SCHEMA

# The side columns a row brings itself (origin_file / origin_line are added).
_STAGED = [c for c in SIDE_SCHEMA if c not in ("origin_file", "origin_line")]

# The channel-day's rows are quarantined by the first check that fails.
_CHECKS = [
    RowCheck(
        "created_at",
        pl.col("created_at").is_null(),
        pl.format("created_at '{}' is not ISO 8601 with a UTC offset", pl.col("created_at_raw")),
    ),
    RowCheck("merchant_order_id", pl.col("merchant_order_id") == "", "merchant_order_id is empty"),
    RowCheck(
        "txn_type",
        ~pl.col("txn_type").is_in(["payment", "refund"]),
        pl.format("txn_type '{}' is not payment or refund", pl.col("txn_type")),
    ),
    RowCheck(
        "merchant_refund_id",
        (pl.col("txn_type") == "refund") & (pl.col("merchant_refund_id") == ""),
        "refund without merchant_refund_id",
    ),
    RowCheck(
        "currency",
        ~pl.col("currency").is_in(list(CURRENCY_EXPONENTS)),
        pl.format("unknown currency '{}'", pl.col("currency")),
    ),
    RowCheck(
        "amount",
        pl.col("amount_minor").is_null(),
        pl.format(
            "amount '{}' is not an exact {} amount", pl.col("amount_raw"), pl.col("currency")
        ),
    ),
    RowCheck(
        "amount",
        pl.col("amount_minor") < 0,
        pl.format("amount '{}' must be positive", pl.col("amount_raw")),
    ),
    RowCheck("status", pl.col("status") == "", "status is empty"),
]


@dataclass
class Split:
    """One batch sorted out: the day's good rows, its quarantined rows, and the rest."""

    rows: pl.DataFrame  # recon.ledger.LEDGER_ROW_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA, in file order
    other: int  # rows of other channels or other days


def split(
    raw: pl.DataFrame,
    first_row: int,
    source: str,
    line_offset: int,
    channel: str,
    tz: str,
    day: dt.date,
) -> Split:
    """Sort ``raw`` (the text columns of the ledger), whose first row is data row
    ``first_row`` of ``source``. Data row n is line n + ``line_offset`` of the source."""
    mine = raw.with_row_index("ledger_row", offset=first_row)
    of_channel = _of_channel(mine.get_column("channel"), channel)
    if not of_channel.all():
        mine = mine.filter(of_channel)
    created_raw = mine.get_column("created_at").fill_null("")
    created = created_at_utc(created_raw)
    # No valid created_at: quarantined today. A valid one of another day: not ours.
    today = created.is_null() | (created.dt.convert_time_zone(tz).dt.date() == day)
    mine = mine.with_columns(created_raw.alias("created_at_raw"), created.alias("created_at"))
    if not today.all():
        mine = mine.filter(today)
    currency = tidied(mine.get_column("currency"), upper=True)
    staged = mine.select(
        *(
            pl.col(c).fill_null("").str.strip_chars()
            for c in ("merchant_order_id", "merchant_refund_id", "channel_txn_id")
        ),
        tidied(mine.get_column("txn_type"), upper=False),
        currency,
        tidied(mine.get_column("status"), upper=True),
        pl.col("amount").fill_null("").alias("amount_raw"),
        "created_at",
        "created_at_raw",
        "ledger_row",
    )
    staged = staged.with_columns(*_money(staged.get_column("amount_raw"), currency))
    good, flagged = apply_checks(staged, _CHECKS)
    rows = good.select(
        *(pl.col(c).cast(SIDE_SCHEMA[c]) for c in _STAGED),
        pl.lit(source).alias("origin_file"),
        pl.col("ledger_row").cast(pl.Int64).alias("origin_line"),
        pl.col("created_at"),
    )
    return Split(
        rows=rows,
        quarantine=_quarantined(flagged, source, line_offset),
        other=raw.height - staged.height,
    )


def _of_channel(names: pl.Series, channel: str) -> pl.Series:
    """Whether each row's channel, trimmed and in lower case, is ``channel`` (a missing
    one is "")."""
    names = names.fill_null("")
    spellings = distinct(names)
    ours = spellings.filter(spellings.str.strip_chars().str.to_lowercase() == channel)
    return lookup(names, dict.fromkeys(ours, True), pl.Boolean()).fill_null(False)


def _money(amount: pl.Series, currency: pl.Series) -> tuple[pl.Series, pl.Series]:
    """amount_minor and exponent of each row."""
    frame = pl.DataFrame([amount.rename("a"), currency.rename("c")])
    minor = frame.select(to_minor_by_currency(pl.col("a"), pl.col("c")).alias("amount_minor"))
    return minor.to_series(), exponents_of(currency).alias("exponent")


def _quarantined(bad: pl.DataFrame, source: str, line_offset: int) -> pl.DataFrame:
    return bad.select(
        pl.lit(source).alias("source_file"),
        (pl.col("ledger_row") + line_offset).cast(pl.Int64).alias("source_line"),
        pl.col("_q_col").alias("column"),
        pl.col("_q_why").alias("reason"),
        pl.lit(None, pl.String).alias("raw"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
