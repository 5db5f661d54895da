"""Hand a parsed bill or a ledger day from one pipeline step to the next as files
(Airflow tasks pass paths, never data)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import polars as pl

from parsers.base import ParsedBill, TotalCheck
from recon.ledger import LedgerDay

ROWS, QUARANTINE, META = "standard.parquet", "quarantine.parquet", "bill.json"


def save_parsed(bill: ParsedBill, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    bill.rows.write_parquet(directory / ROWS)
    bill.quarantine.write_parquet(directory / QUARANTINE)
    meta = {
        "path": str(bill.path),
        "layout": bill.layout,
        "rows_read": bill.rows_read,
        "summary_line": bill.summary_line,
        "totals": [[t.name, str(t.expected), str(t.actual)] for t in bill.totals],
    }
    (directory / META).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    return directory


def load_parsed(directory: Path) -> ParsedBill:
    meta = json.loads((directory / META).read_text(encoding="utf-8"))
    return ParsedBill(
        path=Path(meta["path"]),
        layout=meta["layout"],
        rows=pl.read_parquet(directory / ROWS),
        quarantine=pl.read_parquet(directory / QUARANTINE),
        rows_read=meta["rows_read"],
        totals=[TotalCheck(n, Decimal(e), Decimal(a)) for n, e, a in meta["totals"]],
        summary_line=meta["summary_line"],
    )


LEDGER_ROWS, LEDGER_QUARANTINE, LEDGER_META = (
    "ledger.parquet",
    "ledger_quarantine.parquet",
    "ledger.json",
)


def save_ledger(ledger: LedgerDay, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ledger.rows.write_parquet(directory / LEDGER_ROWS)
    ledger.quarantine.write_parquet(directory / LEDGER_QUARANTINE)
    meta = {
        "path": str(ledger.path),
        "rows_read": ledger.rows_read,
        "rows_other": ledger.rows_other,
    }
    (directory / LEDGER_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return directory


def load_ledger(directory: Path) -> LedgerDay:
    meta = json.loads((directory / LEDGER_META).read_text(encoding="utf-8"))
    return LedgerDay(
        path=Path(meta["path"]),
        rows=pl.read_parquet(directory / LEDGER_ROWS),
        quarantine=pl.read_parquet(directory / LEDGER_QUARANTINE),
        rows_read=meta["rows_read"],
        rows_other=meta["rows_other"],
    )
