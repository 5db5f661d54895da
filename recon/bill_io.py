"""Save a parsed bill between pipeline steps (normalize -> reconcile) as files."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import polars as pl

from parsers.base import ParsedBill, TotalCheck

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
