"""The channel-day workbook: Summary, one sheet per queue, Open breaks.

Every sheet goes through the same path: a polars frame, personal columns masked,
text neutralised against formula injection (recon.excel_safe), then typed cells:
ids and all other text as text cells (``00012345`` and 18-digit ids survive), amounts
as exact decimals, numbers and amounts too long for Excel's 15 digits as text, dates as
dates, times as ISO text with their offset. No cell is ever a formula.

The workbook is written here as SpreadsheetML (an .xlsx is a zip of XML parts), each cell's
XML built by polars expressions a whole column at a time and streamed into the zip: openpyxl,
even in write-only mode, spends ~20 µs of Python a cell (minutes for a long queue), this
about 1 µs of CPU, compression included. openpyxl reads it back in the tests.

A sheet holds at most ``sheet_rows`` rows (recon.report_data.SHEET_ROWS, 100,000; Excel's limit
is 1,048,576): the first rows of a longer queue, the largest of more open breaks. Such a sheet
starts with a note row saying how many rows of how many it shows and where the full queue is
(``<queue>.csv`` / ``<queue>.parquet``); its header is then on row 2. The Summary sheet's
``sheet`` rows give, for every sheet, the rows shown and the same note.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from html import escape
from pathlib import Path
from typing import IO, Any

import polars as pl

from recon.excel_safe import neutralise_frame
from recon.masking import is_personal, mask_frame
from recon.money import exponent_expr, format_minor_expr
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
_ILLEGAL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}]"  # not allowed in XML, so in XLSX
_AMOUNT_COLUMNS = {"amount"}
_CHUNK = 20_000  # rows rendered to XML at a time
_SUMMARY_SCHEMA = {
    "section": pl.String, "item": pl.String, "中文": pl.String, "count": pl.Int64,
    "records": pl.Int64, "amount": pl.String, "currency": pl.String, "value": pl.String,
}  # fmt: skip

# Cell styles (indexes into styles.xml's cellXfs).
_XF_HEADER, _XF_NOTE, _XF_INT, _XF_DATE, _XF_AMOUNT = 1, 2, 3, 4, 5  # + decimal places
_NUMBER_FORMATS = ["0", "yyyy-mm-dd"] + [
    "#,##0" + ("." + "0" * p if p else "") for p in range(_EXCEL_DIGITS + 1)
]
_EXCEL_EPOCH_DAYS = 25_569  # 1970-01-01 as an Excel (1900 system) serial day

_NS = (
    'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
)
_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"


# --- the sheets' frames -----------------------------------------------------------------------


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


def _summary(d: ReportData, sheets: Mapping[str, tuple[int, int, str | None]]) -> pl.DataFrame:
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
    for name, (shown, total, note) in sheets.items():
        value = note or f"all {total:,} rows 全部 {total:,} 行"
        rows.append({"section": "sheet", "item": name, "中文": "工作表行数", "count": shown,
                     "value": value})  # fmt: skip
    return pl.DataFrame(rows, schema=_SUMMARY_SCHEMA)


def _open_breaks(d: ReportData) -> pl.DataFrame:
    """The open-break listing, with the amount as text beside its currency."""
    df = d.open_rows
    personal = sorted(c for c in d.personal_columns if df[c].null_count() < df.height)
    has_amount = pl.col("amount_minor").is_not_null() & (pl.col("currency").fill_null("") != "")
    exponent = exponent_expr(pl.col("currency")).fill_null(2)
    amount = format_minor_expr(pl.col("amount_minor"), exponent)
    return df.select(
        *(c for c, _ in BREAK_COLUMNS),
        *(pl.col(c).fill_null("") for c in personal),
        pl.when(has_amount).then(amount).alias("amount"),
        pl.when(has_amount).then(pl.col("currency")).alias("currency"),
    )


def _queue(df: pl.DataFrame) -> pl.DataFrame:
    """Queue rows with the amount beside the currency, as in the queue CSVs."""
    if "amount" not in df.columns:
        return df
    cols = [c for c in df.columns if c != "amount"]
    at = cols.index("currency") if "currency" in cols else len(cols)
    return df.select([*cols[:at], "amount", *cols[at:]])


def _queue_note(queue: str, shown: int, total: int) -> str | None:
    if shown >= total:
        return None
    return (
        f"Rows 1-{shown:,} of {total:,}: the full queue is in {queue}.csv and "
        f"{queue}.parquet. 仅列前 {shown:,} 行，共 {total:,} 行；"
        f"完整队列见 {queue}.csv / {queue}.parquet。"
    )


def _breaks_note(shown: int, total: int) -> str | None:
    if shown >= total:
        return None
    return (
        f"The largest {shown:,} of {total:,} open breaks: `recon breaks list` and "
        f"`recon breaks export` give them all. 仅列金额最大的 {shown:,} 笔，共 {total:,} 笔未决差错。"
    )


# --- cells as XML, a column at a time ------------------------------------------------------------


def _letter(n: int) -> str:
    """1 -> A, 27 -> AA."""
    out = ""
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


# Each column X of a chunk becomes its cells in a few vectorised passes (each pass reads the
# previous one's columns, so no expression is computed twice): X#t the escaped text of a text
# cell, X#n the value of a number cell with X#s its style; both null: no cell.
_Stages = list[list[pl.Expr]]
_GROUPED = r"^[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$"
_DECIMAL = r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$"
# what _escaped changes: XML-illegal characters, markup, CR, Excel's _xHHHH_ escapes
_SPECIAL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}&<>\r]|_x[0-9A-Fa-f]{4}_"


def _escaped(ref: str) -> pl.Expr:
    """``ref#c`` (clean text) as Excel will show it, escaped for XML; null when empty."""
    c = pl.col(f"{ref}#c")
    cut = pl.when(c.str.len_chars() > _MAX_CELL).then(c.str.slice(0, _MAX_CELL - 1) + "…")
    return (
        pl.when(c == "")
        .then(None)
        .otherwise(cut.otherwise(c))
        .str.replace_all(r"_(x[0-9A-Fa-f]{4}_)", "_x005F_$1")  # Excel's own escape, escaped
        .str.replace_all("&", "&amp;", literal=True)
        .str.replace_all("<", "&lt;", literal=True)
        .str.replace_all(">", "&gt;", literal=True)
        .str.replace_all("\r", "&#13;", literal=True)
    )


def _text_stages(ref: str, text: pl.Expr, special: bool) -> _Stages:
    """Text cells; ``special``: some value needs cleaning, cutting or escaping (most columns
    need none, and skipping the passes that would find nothing to do saves most of the time)."""
    if not special:
        return [[pl.when(text != "").then(text).alias(f"{ref}#t")]]
    clean = text.str.replace_all(_ILLEGAL, "\ufffd").alias(f"{ref}#c")
    return [[clean], [_escaped(ref).alias(f"{ref}#t")]]


def _special(text: pl.Expr) -> pl.Expr:
    """Whether any value of a text column needs :func:`_escaped`."""
    return text.str.contains(_SPECIAL).any() | (text.str.len_chars().max() > _MAX_CELL)


def _number_stages(ref: str, value: pl.Expr, number: pl.Expr, style: int) -> _Stages:
    """A number cell where ``number`` holds, else the text of ``value``."""
    text = value.cast(pl.String)
    return [
        [
            pl.when(number).then(text).alias(f"{ref}#n"),
            pl.when(~number).then(text).alias(f"{ref}#t"),  # needs no escaping
            pl.lit(str(style)).alias(f"{ref}#s"),
        ]
    ]


def _amount_stages(ref: str, text: pl.Expr, special: bool) -> _Stages:
    """An exact decimal number showing the amount's own places when no digit would be lost,
    else the text (amounts read as recon.money.decimal_or_none reads them)."""
    a, g, p = (pl.col(f"{ref}#{k}") for k in "agp")
    sign, whole = p.struct.field("1"), p.struct.field("2")
    frac = p.struct.field("3").fill_null("")
    places = frac.str.len_chars()
    digits = pl.concat_str(whole, frac).str.strip_chars_start("0").str.len_chars()
    exact = (
        sign.is_not_null()
        & ((whole != "") | (places > 0))
        & (digits <= _EXCEL_DIGITS)
        & (places <= _EXCEL_DIGITS)
    )
    value = pl.concat_str(
        pl.when(sign == "-").then(pl.lit("-")).otherwise(pl.lit("")),
        pl.when(whole != "").then(whole).otherwise(pl.lit("0")),
        pl.when(places > 0).then(pl.lit(".") + frac).otherwise(pl.lit("")),
    )
    text_stages = [*_text_stages(ref, text, special), []]
    return [
        [*text_stages[0], text.str.strip_chars().alias(f"{ref}#a")],
        [
            *text_stages[1],
            pl.when(a.str.contains(_GROUPED))
            .then(a.str.replace_all(",", "", literal=True))
            .otherwise(a)
            .alias(f"{ref}#g"),
        ],
        [g.str.extract_groups(_DECIMAL).alias(f"{ref}#p")],
        [
            pl.when(exact).then(value).alias(f"{ref}#n"),
            pl.when(exact).then((places + _XF_AMOUNT).cast(pl.String)).alias(f"{ref}#s"),
            pl.when(~exact).then(pl.col(f"{ref}#t")).alias(f"{ref}#t"),
        ],
    ]


def _source(name: str, ref: str, dtype: pl.DataType) -> tuple[str, pl.Expr]:
    """How a column's cells are made (amount, integer, float, date, text) and from what."""
    col = pl.col(ref)
    if (dtype == pl.String and name in _AMOUNT_COLUMNS) or isinstance(dtype, pl.Decimal):
        return "amount", col.cast(pl.String)
    if dtype.is_integer():
        return "integer", col
    if dtype.is_float():
        return "float", col
    if dtype == pl.Date:
        return "date", col
    if isinstance(dtype, pl.Datetime):  # Excel has no time zones: keep the offset as text
        return "text", col.dt.to_string("%Y-%m-%dT%H:%M:%S%.f" + ("%:z" if dtype.time_zone else ""))
    return "text", col.cast(pl.String)  # booleans as true / false


def _stages(kind: str, ref: str, col: pl.Expr, special: bool) -> tuple[_Stages, bool, bool]:
    """One column's passes, and whether it has text cells, number cells."""
    if kind == "amount":
        return _amount_stages(ref, col, special), True, True
    if kind == "integer":
        small = (col < 10**_EXCEL_DIGITS) & (col > -(10**_EXCEL_DIGITS))
        return _number_stages(ref, col, small, _XF_INT), True, True
    if kind == "float":
        return _number_stages(ref, col, col.is_finite(), 0), True, True
    if kind == "date":
        serial = col.cast(pl.Int64) + _EXCEL_EPOCH_DAYS
        return _number_stages(ref, serial, col.is_not_null(), _XF_DATE), False, True
    return _text_stages(ref, col, special), True, False


def _cell(ref: str, text: bool, number: bool) -> pl.Expr:
    """The XML of one column's cells (``ref``: its letter); null for no cell."""
    row = pl.col("_row")
    out = []
    if number:
        head = pl.lit(f'<c r="{ref}')
        value = [pl.lit('" s="'), pl.col(f"{ref}#s"), pl.lit('"><v>'), pl.col(f"{ref}#n")]
        out.append(pl.concat_str(head, row, *value, pl.lit("</v></c>")))
    if text:
        t = pl.col(f"{ref}#t")
        # Leading or trailing blanks are kept only when the XML says so.
        space = pl.when(t.str.contains(r"^\s|\s$")).then(pl.lit(' xml:space="preserve"'))
        head = pl.lit(f'<c r="{ref}')
        inline = [pl.lit('" t="inlineStr"><is><t'), space.otherwise(pl.lit("")), pl.lit(">")]
        out.append(pl.concat_str(head, row, *inline, t, pl.lit("</t></is></c>")))
    return pl.coalesce(out)


def _masked(df: pl.DataFrame) -> pl.DataFrame:
    """recon.masking.mask_frame, skipped when it has nothing to mask (it looks at every row's
    field in Python)."""
    fields = df["field"].unique().to_list() if "field" in df.columns else []
    personal = any(map(is_personal, df.columns)) or any(f and is_personal(str(f)) for f in fields)
    return mask_frame(df) if personal else df


def _plain(df: pl.DataFrame) -> pl.DataFrame:
    """Columns polars cannot cast to text (lists, structs...) as Python's text of them."""
    simple = (pl.String, pl.Boolean, pl.Date, pl.Time, pl.Duration, pl.Categorical, pl.Enum)
    return df.with_columns(
        pl.Series(c, [None if v is None else str(v) for v in df[c].to_list()], pl.String)
        for c, t in df.schema.items()
        if not (t.is_numeric() or isinstance(t, (pl.Datetime, *simple)))
    )


def _widths(df: pl.DataFrame) -> list[int]:
    longest = df.select(pl.col(c).cast(pl.String).str.len_chars().max() for c in df.columns)
    row = longest.row(0) if df.height else [0] * df.width
    return [min(max(len(c), n or 0) + 2, 48) for c, n in zip(df.columns, row, strict=True)]


def _rows_xml(df: pl.DataFrame, first: int) -> Iterator[bytes]:
    """``df``'s rows as ``<row>`` elements (UTF-8), numbered from ``first``, a chunk at a time."""
    refs = [_letter(i) for i in range(1, df.width + 1)]
    named = df.rename(dict(zip(df.columns, refs, strict=True)))
    sources = {r: _source(n, r, t) for (n, t), r in zip(df.schema.items(), refs, strict=True)}
    texts = [r for r, (kind, _) in sources.items() if kind in ("text", "amount")]
    found = named.select(_special(sources[r][1]).alias(r) for r in texts)
    special = {r for r in texts if found.height and found[r][0]}
    passes: _Stages = []
    cells = []
    for ref, (kind, col) in sources.items():
        stages, text, number = _stages(kind, ref, col, ref in special)
        for i, stage in enumerate(stages):
            if i == len(passes):
                passes.append([])
            passes[i] += stage
        cells.append(_cell(ref, text, number))
    row = pl.concat_str(
        pl.lit('<row r="'), pl.col("_row"), pl.lit('">'), *cells, pl.lit("</row>"),
        ignore_nulls=True,
    )  # fmt: skip
    for start in range(0, df.height, _CHUNK):
        chunk = named.slice(start, _CHUNK).with_row_index("_row", first + start)
        chunk = chunk.with_columns(pl.col("_row").cast(pl.String))
        for stage in passes:
            chunk = chunk.with_columns(stage)
        yield chunk.select(row.str.join("").cast(pl.Binary)).item()


def _header_xml(row: int, names: list[str], style: int) -> str:
    cells = "".join(
        f'<c r="{_letter(i)}{row}" s="{style}" t="inlineStr"><is><t xml:space="preserve">'
        f"{escape(n, quote=False)}</t></is></c>"
        for i, n in enumerate(names, 1)
    )
    return f'<row r="{row}">{cells}</row>'


def _write_sheet(out: IO[bytes], df: pl.DataFrame, note: str | None) -> str | None:
    """One worksheet part; returns its autofilter range (absolute), if any."""
    safe = _plain(neutralise_frame(_masked(df)))
    head = 2 if note else 1  # the header's row
    last_row, last_col = head + safe.height, _letter(max(safe.width, 1))
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{w}" customWidth="1"/>'
        for i, w in enumerate(_widths(safe), 1)
    )
    out.write(
        (
            f'{_DECL}<worksheet {_NS}><dimension ref="A1:{last_col}{last_row}"/>'
            '<sheetViews><sheetView workbookViewId="0">'
            f'<pane ySplit="{head}" topLeftCell="A{head + 1}" activePane="bottomLeft" '
            'state="frozen"/><selection pane="bottomLeft"/></sheetView></sheetViews>'
            '<sheetFormatPr defaultRowHeight="15"/>'
            + (f"<cols>{cols}</cols>" if cols else "")
            + "<sheetData>"
            + (_header_xml(1, [note], _XF_NOTE) if note else "")
            + (_header_xml(head, safe.columns, _XF_HEADER) if safe.width else "")
        ).encode()
    )
    # Polars builds the next chunk while this thread's zlib compresses the last (both
    # release the GIL).
    with ThreadPoolExecutor(1) as writer:
        pending: Future[int] | None = None
        for xml in _rows_xml(safe, head + 1):
            if pending is not None:
                pending.result()
            pending = writer.submit(out.write, xml)
        if pending is not None:
            pending.result()
    out.write(b"</sheetData>")
    ref = f"A{head}:{last_col}{last_row}" if safe.width else None
    if ref:
        out.write(f'<autoFilter ref="{ref}"/>'.encode())
    out.write(b"</worksheet>")
    return f"$A${head}:${last_col}${last_row}" if ref else None


# --- the package ---------------------------------------------------------------------------------


def _styles() -> str:
    fmts = "".join(
        f'<numFmt numFmtId="{164 + i}" formatCode="{escape(f)}"/>'
        for i, f in enumerate(_NUMBER_FORMATS)
    )
    xf = '<xf numFmtId="{}" fontId="{}" fillId="0" borderId="0" xfId="0"{}/>'
    xfs = [xf.format(0, 0, ""), xf.format(0, 1, ""), xf.format(0, 2, "")]
    xfs += [xf.format(164 + i, 0, ' applyNumberFormat="1"') for i in range(len(_NUMBER_FORMATS))]
    return (
        f"{_DECL}<styleSheet {_NS}>"
        f'<numFmts count="{len(_NUMBER_FORMATS)}">{fmts}</numFmts>'
        '<fonts count="3"><font><sz val="11"/><name val="Calibri"/></font>'
        '<font><b/><sz val="11"/><name val="Calibri"/></font>'
        '<font><b/><sz val="11"/><color rgb="FFC0392B"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        f'<cellXfs count="{len(xfs)}">{"".join(xfs)}</cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    )


def _workbook(names: list[str], filters: list[str | None]) -> str:
    sheets = "".join(
        f'<sheet name="{escape(n)}" sheetId="{i}" r:id="rId{i}"/>' for i, n in enumerate(names, 1)
    )
    defined = "".join(
        f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
        f"{escape(_quoted_sheet(n))}!{ref}</definedName>"
        for i, (n, ref) in enumerate(zip(names, filters, strict=True))
        if ref
    )
    return (
        f"{_DECL}<workbook {_NS}><bookViews><workbookView/></bookViews><sheets>{sheets}</sheets>"
        + (f"<definedNames>{defined}</definedNames>" if defined else "")
        + "</workbook>"
    )


def _quoted_sheet(name: str) -> str:
    """A sheet name as formulas and defined names spell it."""
    return "'" + name.replace("'", "''") + "'"


def _package(zf: zipfile.ZipFile, n: int) -> None:
    sheets = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_CT}.worksheet+xml"/>'
        for i in range(1, n + 1)
    )
    zf.writestr(
        "[Content_Types].xml",
        f'{_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.styles+xml"/>'
        f"{sheets}</Types>",
    )
    zf.writestr(
        "_rels/.rels",
        f'{_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>",
    )
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, n + 1)
    )
    zf.writestr(
        "xl/_rels/workbook.xml.rels",
        f'{_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'{rels}<Relationship Id="rId{n + 1}" Type="{_REL}/styles" Target="styles.xml"/>'
        "</Relationships>",
    )
    zf.writestr("xl/styles.xml", _styles())


def write_xlsx(data: ReportData, queues: Mapping[str, pl.DataFrame], path: Path) -> None:
    """``queues``: queue name -> rows (``recon.report_data.load_queues``, or a run's Queues);
    each sheet shows at most ``data.sheet_rows`` rows of it."""
    cap = data.sheet_rows
    totals = {q.queue: q.rows for q in data.queues}
    frames: dict[str, tuple[pl.DataFrame, str | None]] = {}
    sheets: dict[str, tuple[int, int, str | None]] = {}
    for q in QUEUES:
        df = _queue(queues.get(q, pl.DataFrame()))
        total = max(totals.get(q, 0), df.height)
        shown = df.head(cap)
        note = _queue_note(q, shown.height, total)
        frames[q], sheets[q] = (shown, note), (shown.height, total, note)
    listed = _open_breaks(data).head(cap)
    note = _breaks_note(listed.height, data.open_count)
    frames["Open breaks"] = (listed, note)
    sheets["Open breaks"] = (listed.height, data.open_count, note)
    order = [("Summary", (_summary(data, sheets), None)), *frames.items()]
    filters = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _package(zf, len(order))
        for i, (_, (df, sheet_note)) in enumerate(order, 1):
            entry = f"xl/worksheets/sheet{i}.xml"
            # Zip64 only when a part may pass 2 GiB: Excel reads plain zip entries best.
            big = df.estimated_size() * 4 + df.height * df.width * 64 > 2**31
            with zf.open(entry, "w", force_zip64=big) as out:
                filters.append(_write_sheet(out, df, sheet_note))
        zf.writestr("xl/workbook.xml", _workbook([n for n, _ in order], filters))
