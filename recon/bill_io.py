"""Hand a parsed bill or a ledger day from one pipeline step to the next as files
(Airflow tasks pass paths, never data).

The rows are already Parquet parts on disk: saving moves them into the directory
(``standard-00000.parquet``... / ``ledger-00000.parquet``...) next to the quarantine
and a JSON file with the rest; loading rebuilds the object around those parts, so
neither ever reads the rows themselves."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from parsers.base import ParsedBill, TotalCheck
from recon.errors import InputError
from recon.ledger import LedgerDay
from recon.parts import move_parts

ROWS_STEM, QUARANTINE, META = "standard", "quarantine.parquet", "bill.json"
LEDGER_ROWS_STEM, LEDGER_QUARANTINE, LEDGER_META = (
    "ledger",
    "ledger_quarantine.parquet",
    "ledger.json",
)


def save_parsed(bill: ParsedBill, directory: Path) -> Path:
    """Move the bill's parts into ``directory`` (``bill.rows_files`` then names them
    there) and write its quarantine and the rest beside them."""
    bill.rows_files = _move(bill.rows_files, directory, ROWS_STEM)
    bill.quarantine.write_parquet(directory / QUARANTINE)
    meta = {
        "path": str(bill.path),
        "layout": bill.layout,
        "parts": [f.name for f in bill.rows_files],
        "n_rows": bill.n_rows,
        "rows_read": bill.rows_read,
        "summary_line": bill.summary_line,
        "totals": [[t.name, str(t.expected), str(t.actual)] for t in bill.totals],
    }
    _write_meta(directory / META, meta)
    return directory


def load_parsed(directory: Path) -> ParsedBill:
    meta = _read_meta(directory / META)
    return ParsedBill(
        path=Path(meta["path"]),
        layout=meta["layout"],
        rows_files=_parts(directory, meta),
        n_rows=meta["n_rows"],
        quarantine=pl.read_parquet(directory / QUARANTINE),
        rows_read=meta["rows_read"],
        totals=[TotalCheck(n, Decimal(e), Decimal(a)) for n, e, a in meta["totals"]],
        summary_line=meta["summary_line"],
    )


def save_ledger(ledger: LedgerDay, directory: Path) -> Path:
    """Move the ledger day's parts into ``directory`` (``ledger.rows_files`` then names
    them there) and write its quarantine and counts beside them."""
    sources = {f.parent for f in ledger.rows_files}
    ledger.rows_files = _move(ledger.rows_files, directory, LEDGER_ROWS_STEM)
    for source in sources - {directory}:  # load_ledger_day's own folder, now empty
        if source.name.startswith("ledger-") and not any(source.iterdir()):
            source.rmdir()
    ledger.quarantine.write_parquet(directory / LEDGER_QUARANTINE)
    meta = {
        "path": str(ledger.path),
        "parts": [f.name for f in ledger.rows_files],
        "n_rows": ledger.n_rows,
        "rows_read": ledger.rows_read,
        "rows_other": ledger.rows_other,
    }
    _write_meta(directory / LEDGER_META, meta)
    return directory


def load_ledger(directory: Path) -> LedgerDay:
    meta = _read_meta(directory / LEDGER_META)
    return LedgerDay(
        path=Path(meta["path"]),
        rows_files=_parts(directory, meta),
        n_rows=meta["n_rows"],
        quarantine=pl.read_parquet(directory / LEDGER_QUARANTINE),
        rows_read=meta["rows_read"],
        rows_other=meta["rows_other"],
    )


def _move(files: tuple[Path, ...], directory: Path, stem: str) -> tuple[Path, ...]:
    moved = move_parts(files, directory, stem)
    (directory / f"{stem}.parquet").unlink(missing_ok=True)  # the one-file layout of old
    return moved


def _parts(directory: Path, meta: dict[str, Any]) -> tuple[Path, ...]:
    parts = tuple(directory / name for name in meta["parts"])
    if not parts:
        raise InputError(directory, "saved rows have no parts")
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise InputError(directory, f"saved rows are incomplete: missing {', '.join(missing)}")
    return parts


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")


def _read_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta
