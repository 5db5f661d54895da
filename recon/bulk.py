"""Bulk break handling through a spreadsheet: export breaks to CSV or XLSX, let analysts
fill in ``action`` / ``reason`` / ``assignee_new``, import the file back.

An import is all or nothing: the whole file is checked inside the transaction that
would apply it, and one bad row rejects the file, naming every bad line.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recon.analyst import Applied, Break, Request, apply, problem, transaction
from recon.errors import InputError
from recon.excel_safe import neutralise, neutralise_frame

EXPORT_COLUMNS = (
    "break_id", "channel", "business_date", "kind", "field", "state", "reason_code", "txn_type",
    "merchant_order_id", "merchant_refund_id", "amount", "currency", "ledger_value",
    "channel_value", "age_days", "assignee",
)  # fmt: skip
EDIT_COLUMNS = ("action", "reason", "assignee_new")
REQUIRED = ("break_id", "channel", "merchant_order_id", *EDIT_COLUMNS)
IDENTITY = ("channel", "merchant_order_id", "merchant_refund_id")  # checked against the store
SHEET = "breaks"
_NUMERIC = {"age_days"}  # every other cell is text, so ids like 00012345 survive Excel


def breaks_frame(breaks: list[Break], columns: tuple[str, ...] = EXPORT_COLUMNS) -> pl.DataFrame:
    """The breaks as text columns (``age_days`` an integer), not yet made formula-safe."""
    known = {f.name for f in fields(Break)}
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for b in breaks:
        for c in columns:
            v = getattr(b, c) if c in known else ""
            data[c].append(v if c in _NUMERIC else str(v))
    schema = {c: pl.Int64 if c in _NUMERIC else pl.String for c in columns}
    return pl.DataFrame(data, schema=schema)


def export_breaks(breaks: list[Break], out: Path) -> None:
    """Write the breaks plus empty edit columns, formula-safe, as ``.csv`` or ``.xlsx``."""
    df = neutralise_frame(breaks_frame(breaks, (*EXPORT_COLUMNS, *EDIT_COLUMNS)))
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise InputError(out, "export to .csv or .xlsx")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if suffix == ".csv":
        df.write_csv(tmp, include_bom=True)  # the BOM makes Excel read UTF-8, not the ANSI page
    else:
        _write_xlsx(df, tmp)
    tmp.replace(out)


def _write_xlsx(df: pl.DataFrame, out: Path) -> None:
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # type: ignore[import-untyped]

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(SHEET)
    ws.freeze_panes = "A2"
    ws.append(df.columns)
    for row in df.iter_rows():
        cells = []
        for name, value in zip(df.columns, row, strict=True):
            if name in _NUMERIC:
                cells.append(value)
                continue
            cell = WriteOnlyCell(ws, value=ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))
            cell.number_format = "@"  # Text: what the analyst types stays text as well
            cells.append(cell)
        ws.append(cells)
    wb.save(out)


# --- reading an edited export back ---------------------------------------------------------


@dataclass(frozen=True)
class SheetRow:
    line: int  # as the user sees it: CSV physical line, XLSX row number
    cells: dict[str, str]


def _decode(path: Path, data: bytes) -> str:
    # Excel on a Chinese Windows saves "CSV" in the ANSI code page, i.e. GBK
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise InputError(path, "not UTF-8 or GB18030 text")


def _read_csv(path: Path) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(_decode(path, path.read_bytes()), newline=""))
    rows: list[tuple[int, list[str]]] = []
    start = 1
    for record in reader:
        rows.append((start, record))
        start = reader.line_num + 1  # a quoted cell may span lines
    return rows


def _text(value: Any) -> str:
    """A cell as text; numbers Excel made of typed digits back to their digits."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path) -> list[tuple[int, list[str]]]:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, data_only=False)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not XLSX
        raise InputError(path, f"cannot read as XLSX: {exc}") from None
    ws = wb[SHEET] if SHEET in wb.sheetnames else wb.active
    return [(cells[0].row, [_text(c.value) for c in cells]) for cells in ws.iter_rows()]


def _unneutralise(df: pl.DataFrame) -> pl.DataFrame:
    """Undo excel_safe's leading ``'`` exactly where excel_safe would have added it."""

    def undo(col: pl.Expr) -> pl.Expr:
        rest = col.str.slice(1)
        guarded = col.str.starts_with("'") & (neutralise(rest) != rest)
        return pl.when(guarded).then(rest).otherwise(col)

    return df.with_columns(undo(pl.col(c)).alias(c) for c in df.columns)


def read_sheet(path: Path) -> list[SheetRow]:
    """The rows of an edited export, keyed by header, with the formula guard undone."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise InputError(path, "import a .csv or .xlsx export")
    try:
        rows = _read_csv(path) if suffix == ".csv" else _read_xlsx(path)
    except (OSError, csv.Error) as exc:
        raise InputError(path, f"cannot read: {exc}") from None
    if not rows:
        raise InputError(path, "empty file")
    header_line, header = rows[0]
    header = [h.strip().lstrip("\ufeff") or f"_column{i}" for i, h in enumerate(header, 1)]
    if dupes := sorted({h for h in header if header.count(h) > 1}):
        raise InputError(path, f"column {', '.join(dupes)} appears twice", line=header_line)
    if missing := [c for c in REQUIRED if c not in header]:
        raise InputError(path, f"no column {', '.join(missing)}", line=header_line)
    body = [(n, r) for n, r in rows[1:] if any(v.strip() for v in r)]
    width = len(header)
    frame = pl.DataFrame(
        [(r + [""] * width)[:width] for _, r in body], schema=header, orient="row"
    ).cast(pl.String)
    frame = _unneutralise(frame)
    return [
        SheetRow(n, dict(zip(header, values, strict=True)))
        for (n, _), values in zip(body, frame.iter_rows(), strict=True)
    ]


# --- validating and applying ---------------------------------------------------------------


@dataclass(frozen=True)
class BadLine:
    line: int
    reasons: tuple[str, ...]


class ImportRejected(Exception):
    """The file has bad rows: nothing was applied."""

    def __init__(self, path: Path, bad: list[BadLine]) -> None:
        super().__init__(f"{path}: {len(bad)} bad row(s), nothing applied")
        self.path = path
        self.bad = bad

    def lines(self) -> list[str]:
        return [f"{self.path}:{b.line}: {'; '.join(b.reasons)}" for b in self.bad]


@dataclass(frozen=True)
class ImportReport:
    applied: list[Applied]
    ignored: int  # rows without an action


def _request(row: SheetRow, origin: str) -> tuple[Request | None, list[str]]:
    reasons: list[str] = []
    text = row.cells["break_id"].strip()
    if not (text.isascii() and text.isdigit()):
        reasons.append(f"break_id {text!r} is not a break number")
        return None, reasons
    req = Request(
        break_id=int(text),
        action=row.cells["action"].strip().lower().replace("-", "_"),
        reason=row.cells["reason"].strip(),
        assignee=row.cells["assignee_new"].strip(),
        origin=f"{origin}:{row.line}",
    )
    return req, reasons


def validate(
    con: duckdb.DuckDBPyConnection, rows: list[SheetRow], origin: str
) -> tuple[list[Request], list[BadLine], int]:
    """(requests to apply, bad lines, ignored rows) for the rows of one file."""
    acting = [r for r in rows if r.cells["action"].strip()]
    parsed = [(r, *_request(r, origin)) for r in acting]
    ids = sorted({req.break_id for _, req, _ in parsed if req is not None})
    store: dict[int, tuple[str, ...]] = {}
    if ids:
        found = con.execute(
            f"SELECT break_id, state, {', '.join(IDENTITY)} FROM break_items "
            f"WHERE break_id IN ({', '.join('?' * len(ids))})",
            ids,
        ).fetchall()
        store = {int(r[0]): tuple("" if v is None else str(v) for v in r[1:]) for r in found}
    lines_of: dict[int, list[int]] = defaultdict(list)
    for row, req, _ in parsed:
        if req is not None:
            lines_of[req.break_id].append(row.line)
    requests: list[Request] = []
    bad: list[BadLine] = []
    for row, req, reasons in parsed:
        if req is not None:
            reasons += _row_problems(row, req, store.get(req.break_id), lines_of[req.break_id])
        if reasons:
            bad.append(BadLine(row.line, tuple(reasons)))
        elif req is not None:
            requests.append(req)
    return requests, bad, len(rows) - len(acting)


def _row_problems(
    row: SheetRow, req: Request, stored: tuple[str, ...] | None, lines: list[int]
) -> list[str]:
    out: list[str] = []
    if len(lines) > 1:
        out.append(f"break {req.break_id} is on lines {', '.join(map(str, lines))}")
    if stored is None:
        out.append(f"unknown break_id {req.break_id}")
    else:
        for column, value in zip(IDENTITY, stored[1:], strict=True):
            given = row.cells.get(column)
            if given is not None and given != value:
                out.append(
                    f"{column} {given!r} is not break {req.break_id}'s {value!r} "
                    "(changed, or mangled by a spreadsheet? the .xlsx export keeps ids exact)"
                )
    if why := problem(req.break_id, stored[0] if stored else None, req):
        out.append(why)
    return out


def import_sheet(con: duckdb.DuckDBPyConnection, path: Path, actor: str) -> ImportReport:
    """Check the whole file, then apply every action in one transaction (or none)."""
    rows = read_sheet(path)
    with transaction(con):  # checked where it is applied: no change can slip in between
        requests, bad, ignored = validate(con, rows, path.name)
        if bad:
            raise ImportRejected(path, bad)
        applied = [apply(con, req, actor) for req in requests]
    return ImportReport(applied, ignored)
