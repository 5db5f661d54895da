"""Build a ParsedBill or a LedgerDay by hand, from a small DataFrame written as Parquet parts
(as the parsers and the ledger loader leave them), for tests of what reads them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from parsers.base import ParsedBill, TotalCheck
from recon.ledger import LEDGER_ROW_SCHEMA, LedgerDay
from recon.parts import write_part
from recon.schema import POLARS_SCHEMA, empty_quarantine

UTC = dt.UTC


def _parts(df: pl.DataFrame, directory: Path, stem: str, parts: int) -> tuple[Path, ...]:
    """``df`` in ``parts`` consecutive parts (at least one, possibly empty), in row order."""
    step = max(1, -(-df.height // parts))
    slices = [df.slice(i * step, step) for i in range(parts)] if df.height else [df]
    return tuple(
        write_part(part, directory / f"{stem}-{i:05d}.parquet") for i, part in enumerate(slices)
    )


def bill_rows(rows: list[dict[str, Any]], source_file: str = "bill.csv") -> pl.DataFrame:
    """Standard bill rows (recon.schema.POLARS_SCHEMA); every column but the key and the
    amount has a default, source_line counts from 2 (after the header)."""
    out = []
    for i, r in enumerate(rows):
        when = r.get("trade_time", dt.datetime(2024, 3, 1, 4, 0, tzinfo=UTC))
        amount = r["amount_minor"]
        out.append(
            {
                "channel": "wechatpay",
                "channel_txn_id": f"T{r['merchant_order_id']}",
                "channel_refund_id": "",
                "merchant_refund_id": "",
                "txn_type": "payment",
                "fee_minor": (amount * 6 + 500) // 1000,
                "currency": "CNY",
                "channel_status": "SUCCESS",
                "status": "SUCCESS",
                "business_date": dt.date(2024, 3, 1),
                "source_file": source_file,
                "source_line": i + 2,
                **r,
                "trade_time": when,
            }
        )
    return pl.DataFrame(out, schema=POLARS_SCHEMA).select(list(POLARS_SCHEMA))


def ledger_rows(rows: list[dict[str, Any]], origin_file: str = "ledger.csv") -> pl.DataFrame:
    """Ledger rows of a day (recon.ledger.LEDGER_ROW_SCHEMA), with defaults as bill_rows."""
    out = []
    for i, r in enumerate(rows):
        out.append(
            {
                "merchant_refund_id": "",
                "txn_type": "payment",
                "channel_txn_id": f"T{r['merchant_order_id']}",
                "exponent": 2,
                "currency": "CNY",
                "status": "SUCCESS",
                "origin_file": origin_file,
                "origin_line": i + 1,
                "created_at": dt.datetime(2024, 3, 1, 4, 0, tzinfo=UTC),
                **r,
            }
        )
    return pl.DataFrame(out, schema=LEDGER_ROW_SCHEMA).select(list(LEDGER_ROW_SCHEMA))


def parsed_bill(
    rows: pl.DataFrame,
    directory: Path,
    *,
    parts: int = 1,
    path: Path = Path("bill.csv"),
    quarantine: pl.DataFrame | None = None,
    totals: list[TotalCheck] | None = None,
) -> ParsedBill:
    q = empty_quarantine() if quarantine is None else quarantine
    return ParsedBill(
        path=path,
        layout="test",
        rows_files=_parts(rows.select(list(POLARS_SCHEMA)), directory, "bill", parts),
        n_rows=rows.height,
        quarantine=q,
        rows_read=rows.height + q.height,
        totals=totals or [],
    )


def ledger_day(
    rows: pl.DataFrame,
    directory: Path,
    *,
    parts: int = 1,
    path: Path = Path("ledger.csv"),
    rows_other: int = 0,
) -> LedgerDay:
    q = empty_quarantine()
    return LedgerDay(
        path=path,
        rows_files=_parts(rows.select(list(LEDGER_ROW_SCHEMA)), directory, "ledger", parts),
        n_rows=rows.height,
        quarantine=q,
        rows_read=rows.height + rows_other,
        rows_other=rows_other,
    )
