"""The channel-day workbook: Summary, one sheet per queue, Open breaks.

Every sheet goes through the same path: a polars frame, personal columns masked,
text neutralised against formula injection (recon.excel_safe), then typed cells:
ids and all other text as text cells (``00012345`` and 18-digit ids survive), amounts
as exact decimals, numbers and amounts too long for Excel's 15 digits as text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
from openpyxl.utils import get_column_letter  # type: ignore[import-untyped]
from openpyxl.worksheet.worksheet import Worksheet  # type: ignore[import-untyped]

from recon.excel_safe import neutralise_frame
from recon.masking import mask_frame
from recon.money import decimal_or_none
from recon.queues import QUEUES
from recon.report_data import (
    BREAK_COLUMNS,
    KIND_LABELS,
    QUEUE_LABELS,
    STATE_LABELS,
    ReportData,
    Tally,
)

_EXCEL_DIGITS = 15  # Excel keeps 15 significant digits of a number
_MAX_CELL = 32_767
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML, so in XLSX
_AMOUNT_COLUMNS = {"amount"}
_SUMMARY_SCHEMA = {
    "section": pl.String, "item": pl.String, "中文": pl.String, "count": pl.Int64,
    "records": pl.Int64, "amount": pl.String, "currency": pl.String, "value": pl.String,
}  # fmt: skip


def _tally_rows(
    section: str, item: str, zh: str, t: Tally, records: int | None = None
) -> Iterator[dict[str, Any]]:
    """One row per currency; the count goes on the first only, so a column sum stays right."""
    base = {"section": section, "item": item, "中文": zh}
    if not t.amounts:
        yield base | {"count": t.count, "records": records}
    for i, m in enumerate(t.amounts):
        first = {"count": t.count, "records": records} if i == 0 else {}
        yield base | first | {"amount": m.text, "currency": m.currency}


def _summary(d: ReportData) -> pl.DataFrame:
    rows: list[dict[str, Any]] = [
        {"section": "report", "item": "channel", "中文": "渠道", "value": d.channel},
        {"section": "report", "item": "business_date", "中文": "账单日期", "value": d.day.isoformat()},
        {"section": "report", "item": "generated_at", "中文": "生成时间",
         "value": d.generated_at.astimezone(dt.UTC).isoformat(timespec="seconds")},
    ]  # fmt: skip
    if d.run is not None and d.match is not None:
        rows += [
            {"section": "run", "item": "run_id", "中文": "对账批次", "value": d.run.run_id},
            {"section": "run", "item": "bill_file", "中文": "对账单", "value": d.run.bill_file},
            {"section": "run", "item": "ledger_file", "中文": "账务文件", "value": d.run.ledger_file},
            {"section": "run", "item": "quarantined", "中文": "隔离行", "count": d.run.quarantined},
            {"section": "match", "item": "matched", "中文": "已匹配", "count": d.match.matched},
            {"section": "match", "item": "bill_rows", "中文": "账单笔数", "count": d.match.bill_rows},
            {"section": "match", "item": "ledger_rows", "中文": "账务笔数", "count": d.match.ledger_rows},
            {"section": "match", "item": "rate", "中文": "匹配率", "value": d.match.percent},
        ]  # fmt: skip
    for q in d.queues:
        t = Tally(q.rows, q.amounts)
        rows += _tally_rows("queue", q.queue, QUEUE_LABELS.get(q.queue, ""), t, q.records)
    for b in d.breaks:
        zh = f"{KIND_LABELS.get(b.kind, '')} {STATE_LABELS.get(b.state, '')}".strip()
        rows += _tally_rows("breaks", f"{b.kind}/{b.state}", zh, b.tally)
    for a in d.aging:
        rows += _tally_rows("aging_days", a.label, "账龄（天）", a.tally)
    for p in d.trend:
        rows += _tally_rows("open_trend", p.day.isoformat(), "未决差错", p.tally)
    return pl.DataFrame(rows, schema=_SUMMARY_SCHEMA)


def _open_breaks(d: ReportData) -> pl.DataFrame:
    personal = sorted({c for b in d.open_breaks for c, _ in b.personal})
    rows = [
        {c: getattr(b, c) for c, _ in BREAK_COLUMNS}
        | dict.fromkeys(personal, "")
        | dict(b.personal)
        | {"amount": b.amount.text if b.amount else None}
        | {"currency": b.amount.currency if b.amount else None}
        for b in d.open_breaks
    ]
    names = [c for c, _ in BREAK_COLUMNS] + personal + ["amount", "currency"]
    typed = {"break_id": pl.Int64, "business_date": pl.Date, "age_days": pl.Int64}
    schema = {c: typed.get(c, pl.String) for c in names}
    return pl.DataFrame(rows, schema=schema)


def _queue(df: pl.DataFrame) -> pl.DataFrame:
    """Queue rows with the amount beside the currency, as in the queue CSVs."""
    if "amount" not in df.columns:
        return df
    cols = [c for c in df.columns if c != "amount"]
    at = cols.index("currency") if "currency" in cols else len(cols)
    return df.select([*cols[:at], "amount", *cols[at:]])


def _text(value: str) -> str:
    value = _ILLEGAL.sub("\ufffd", value)
    return value if len(value) <= _MAX_CELL else value[: _MAX_CELL - 1] + "…"


def _amount(text: str) -> tuple[Decimal, str] | None:
    """A decimal number cell showing the amount's own places, when no digit would be lost."""
    amount = decimal_or_none(text)
    if amount is None:
        return None
    digits, exponent = amount.as_tuple()[1:]
    if len(digits) > _EXCEL_DIGITS or not isinstance(exponent, int):
        return None
    places = max(-exponent, 0)
    return amount, "#,##0" + ("." + "0" * places if places else "")


def _cell(column: str, value: Any) -> tuple[Any, str | None]:
    """(cell value, number format): text stays text, except an amount Excel can hold exactly."""
    if value is None:
        return None, None
    if isinstance(value, str) and column in _AMOUNT_COLUMNS:
        return _amount(value) or (_text(value), None)
    if isinstance(value, bool):
        return str(value).lower(), None
    if isinstance(value, int):
        return (value, "0") if abs(value) < 10**_EXCEL_DIGITS else (str(value), None)
    if isinstance(value, dt.datetime):
        return value.isoformat(), None  # Excel has no time zones: keep the offset as text
    if isinstance(value, dt.date):
        return value, "yyyy-mm-dd"
    return _text(str(value)), None


def _widths(df: pl.DataFrame) -> list[int]:
    longest = df.select(pl.col(c).cast(pl.String).str.len_chars().max() for c in df.columns)
    row = longest.row(0) if df.height else [0] * df.width
    return [min(max(len(c), n or 0) + 2, 48) for c, n in zip(df.columns, row, strict=True)]


def _row(ws: Worksheet, columns: list[str], values: Sequence[Any]) -> list[Any]:
    """Plain values where openpyxl's own typing is right (a cell object costs time)."""
    out = []
    for column, raw in zip(columns, values, strict=True):
        value, fmt = _cell(column, raw)
        # Neutralised text never starts with "=", but openpyxl would make such text a formula.
        if fmt or (isinstance(value, str) and value.startswith("=")):
            cell = WriteOnlyCell(ws, value=value)
            if fmt:
                cell.number_format = fmt
            else:
                cell.data_type = "s"
            value = cell
        out.append(value)
    return out


def _write(ws: Worksheet, df: pl.DataFrame) -> None:
    safe = neutralise_frame(mask_frame(df))
    # A write-only sheet takes its layout before its rows.
    for i, width in enumerate(_widths(safe), start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"
    if safe.width:
        ws.auto_filter.ref = f"A1:{get_column_letter(safe.width)}{safe.height + 1}"
    ws.append(_row(ws, ["header"] * safe.width, safe.columns))
    for values in safe.iter_rows():
        ws.append(_row(ws, safe.columns, values))


def write_xlsx(data: ReportData, queues: Mapping[str, pl.DataFrame], path: Path) -> None:
    """``queues``: queue name -> rows (``recon.report_data.load_queues``, or a run's Queues)."""
    wb = Workbook(write_only=True)  # streams rows: fast and small in memory for long queues
    _write(wb.create_sheet("Summary"), _summary(data))
    for q in QUEUES:
        _write(wb.create_sheet(q), _queue(queues.get(q, pl.DataFrame())))
    _write(wb.create_sheet("Open breaks"), _open_breaks(data))
    wb.save(path)
