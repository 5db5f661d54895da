"""Load the internal ledger export (CSV or Parquet) for one channel-day.

Contract (README): merchant_order_id, merchant_refund_id, txn_type, channel,
channel_txn_id, amount (positive decimal string, major units), currency,
status, created_at (ISO 8601 with offset). One file may hold several channels
and neighbouring days; only the channel's rows whose created_at falls on the
business day in the channel's time zone are kept. Everything is read as text:
ids that look like numbers stay exactly as written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recon.checks import RowCheck, apply_checks
from recon.currency import CURRENCY_EXPONENTS
from recon.errors import InputError
from recon.money import exponent_expr, to_minor_by_currency
from recon.schema import QUARANTINE_SCHEMA
from recon.sides import SIDE_SCHEMA

LEDGER_COLUMNS = (
    "merchant_order_id",
    "merchant_refund_id",
    "txn_type",
    "channel",
    "channel_txn_id",
    "amount",
    "currency",
    "status",
    "created_at",
)
_ISO_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?[+-]\d{2}:\d{2}$"


@dataclass
class LedgerDay:
    path: Path
    rows: pl.DataFrame  # recon.sides.SIDE_SCHEMA plus created_at
    quarantine: pl.DataFrame
    rows_read: int  # all data rows in the file
    rows_other: int  # rows of other channels or other days

    @property
    def rows_channel_day(self) -> int:
        return self.rows.height + self.quarantine.height


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_ledger(path: Path) -> pl.DataFrame:
    """The raw export as text columns plus ``ledger_row`` (1-based data row)."""
    try:
        if _is_parquet(path):
            df = pl.read_parquet(path)
            df = df.with_columns(pl.all().cast(pl.String))
        else:
            df = pl.read_csv(
                path,
                infer_schema=False,
                encoding="utf8",
                truncate_ragged_lines=False,
            )
    except FileNotFoundError:
        raise InputError(path, "cannot read ledger: no such file") from None
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"cannot read ledger: {first}") from None
    names = [c.strip().lstrip("\ufeff").lower() for c in df.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(path, f"ledger header repeats column(s) {', '.join(twice)}", line=1)
    df = df.rename(dict(zip(df.columns, names, strict=True)))
    missing = [c for c in LEDGER_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            path, f"ledger header lacks column(s) {', '.join(missing)}", line=1, column=missing[0]
        )
    return df.select(LEDGER_COLUMNS).with_row_index("ledger_row", offset=1)


def _normalised_created_at(col: pl.Expr) -> pl.Expr:
    """Bring the ISO 8601 variants (Z, +08, +0800, space, no seconds) to one form.

    Values already in that form stay as they are and ``...Z`` becomes ``...+00:00``
    without the regex chain, which runs only for the other spellings."""
    return col.map_batches(_normalised_series, return_dtype=pl.String, is_elementwise=True)


# Exactly what _exact_normalised makes of them: kept, and Z -> +00:00.
_ISO_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"


def _normalised_series(s: pl.Series) -> pl.Series:
    frame = s.cast(pl.String).rename("v").to_frame()
    v = pl.col("v")
    kinds = frame.select(
        v.str.contains(_ISO_OFFSET).fill_null(False).alias("iso"),
        v.str.contains(_ISO_Z).fill_null(False).alias("z"),
    )
    iso, z = kinds.get_column("iso"), kinds.get_column("z")
    if iso.all():
        return s
    out = frame.select(pl.when(z).then(v.str.head(-1) + pl.lit("+00:00")).otherwise(v)).to_series()
    others = (~(iso | z)).arg_true()
    if others.len():
        out = out.scatter(others, frame[others].select(_exact_normalised(v)).to_series())
    return out.rename(s.name)


def _exact_normalised(col: pl.Expr) -> pl.Expr:
    """The reference normalisation behind :func:`_normalised_created_at`."""
    s = col.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
    s = s.str.replace(r"(?i)z$", "+00:00").str.replace(r"([+-]\d{2})$", "${1}:00")
    s = s.str.replace(r"([+-]\d{2})(\d{2})$", "${1}:${2}")
    return s.str.replace(r"T(\d{2}:\d{2})([+-])", "T${1}:00${2}")


def load_ledger_day(path: Path, channel: str, tz: str, day: dt.date) -> LedgerDay:
    raw = read_ledger(path)
    df = raw.with_columns(
        pl.col("channel").str.strip_chars().str.to_lowercase().fill_null(""),
        pl.col("created_at").fill_null("").alias("created_at_raw"),
    ).with_columns(_normalised_created_at(pl.col("created_at_raw")).alias("_iso"))
    mine = df.filter(pl.col("channel") == channel)
    created = pl.col("_iso").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    mine = mine.with_columns(
        pl.when(pl.col("_iso").str.contains(_ISO_OFFSET)).then(created).alias("created_at")
    ).with_columns(pl.col("created_at").dt.convert_time_zone(tz).dt.date().alias("business_date"))
    undated = mine.filter(pl.col("created_at").is_null())
    today = mine.filter(pl.col("business_date") == day)
    staged = today.with_columns(
        *(
            pl.col(c).fill_null("").str.strip_chars()
            for c in ("merchant_order_id", "merchant_refund_id", "channel_txn_id")
        ),
        pl.col("txn_type").fill_null("").str.strip_chars().str.to_lowercase(),
        pl.col("currency").fill_null("").str.strip_chars().str.to_uppercase(),
        pl.col("status").fill_null("").str.strip_chars().str.to_uppercase(),
        pl.col("amount").fill_null("").alias("amount_raw"),
    ).with_columns(
        to_minor_by_currency(pl.col("amount_raw"), pl.col("currency")).alias("amount_minor"),
        exponent_expr(pl.col("currency")).alias("exponent"),
    )
    checks = [
        RowCheck(
            "merchant_order_id", pl.col("merchant_order_id") == "", "merchant_order_id is empty"
        ),
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
    # CSV: header is line 1, so data row n is line n+1; Parquet has rows only.
    offset = 0 if _is_parquet(path) else 1
    good, flagged = apply_checks(staged, checks)
    bad = _quarantined(flagged, path, offset)
    q_undated = _quarantined(
        undated.with_columns(
            pl.lit("created_at").alias("_q_col"),
            pl.format(
                "created_at '{}' is not ISO 8601 with a UTC offset", pl.col("created_at_raw")
            ).alias("_q_why"),
        ),
        path,
        offset,
    )
    rows = good.select(
        *(
            pl.col(c).cast(t)
            for c, t in SIDE_SCHEMA.items()
            if c not in ("origin_file", "origin_line")
        ),
        pl.lit(str(path)).alias("origin_file"),
        pl.col("ledger_row").cast(pl.Int64).alias("origin_line"),
        pl.col("created_at"),
    )
    quarantine = pl.concat([q_undated, bad]).cast(QUARANTINE_SCHEMA).sort("source_line")  # type: ignore[arg-type]
    return LedgerDay(
        path=path,
        rows=rows,
        quarantine=quarantine,
        rows_read=raw.height,
        rows_other=raw.height - mine.height + (mine.height - undated.height - today.height),
    )


def _quarantined(bad: pl.DataFrame, path: Path, line_offset: int) -> pl.DataFrame:
    return bad.select(
        pl.lit(str(path)).alias("source_file"),
        (pl.col("ledger_row") + line_offset).cast(pl.Int64).alias("source_line"),
        pl.col("_q_col").alias("column"),
        pl.col("_q_why").alias("reason"),
        pl.lit(None, pl.String).alias("raw"),
    )
