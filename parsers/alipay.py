"""Alipay trade bill detail (支付宝业务明细).

The download is a zip of GBK CSVs (a 业务明细 detail and a 业务明细(汇总) summary)
whose entry names are GBK bytes without the UTF-8 flag; a bare or gzipped CSV is
accepted too. Inside: '#' header lines, one column header row, data rows whose
values often end with a TAB, then '#' footer lines carrying the bill's totals.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import IO, ClassVar

import polars as pl

from parsers.base import ParseContext, ParsedBill, TotalCheck
from parsers.chunked import (
    CHUNK_BYTES,
    Chunk,
    detached,
    gather,
    in_file,
    iter_chunks,
    lines_of,
    open_stream,
    payload,
    prepend,
    run_reported,
    share_read,
    spool_folder,
    work_dir,
)
from parsers.common import (
    ZIP_MAGIC,
    RowCheck,
    business_date,
    local_to_utc,
    split_quarantine,
    zip_entry_name,
)
from recon.currency import CURRENCY_EXPONENTS
from recon.errors import InputError
from recon.money import decimal_or_none, to_minor
from recon.parts import write_part

TXN_ID = "支付宝交易号"
ORDER_ID = "商户订单号"
BIZ_TYPE = "业务类型"
DONE_AT = "完成时间"
AMOUNT = "订单金额（元）"
RECEIVED = "商家实收（元）"
DISCOUNT = "商家优惠（元）"
REFUND_ID = "退款批次号/请求号"
FEE = "服务费（元）"
REQUIRED = (TXN_ID, ORDER_ID, BIZ_TYPE, DONE_AT, AMOUNT, RECEIVED, DISCOUNT, REFUND_ID, FEE)

PAYMENT, REFUND = "交易", "退款"
ROW = "(row)"  # quarantine column for faults of the whole line
# Alipay writes the first; Excel re-saves give the others.
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M")
# RuntimeError: encrypted entry; NotImplementedError: unsupported compression.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
    NotImplementedError,
)

# One field, preceded by its comma: a double-quoted value (blanks around allowed) or a plain one.
_FIELD = r',(?:[ \t]*"(?:[^"]|"")*"[ \t]*|[^,]*)'
_NUM = r"([+-]?[\d,.]+)\s*元"
_FOOTERS = {
    PAYMENT: (
        "交易合计",
        re.compile(
            rf"^#交易合计[：:]\s*(\d+)\s*笔[，,]\s*商家实收共\s*{_NUM}[，,]\s*商家优惠共\s*{_NUM}"
        ),
    ),
    REFUND: (
        "退款合计",
        re.compile(
            rf"^#退款合计[：:]\s*(\d+)\s*笔[，,]\s*商家实收退款共\s*{_NUM}[，,]\s*商家优惠退款共\s*{_NUM}"
        ),
    ),
}


class AlipayBillParser:
    name: ClassVar[str] = "alipay_detail"

    def parse(self, path: Path, ctx: ParseContext) -> ParsedBill:
        out = work_dir(ctx.work_dir)
        plain = replace(ctx, status_map=dict(ctx.status_map), work_dir=None, progress=None)
        with ExitStack() as stack:
            source, stream, text_size = _open(path, stack)
            keep = in_file(stream)  # then workers read their lines from the file itself
            chunks = iter_chunks(
                source,
                stream,
                ctx.chunk_bytes or CHUNK_BYTES,
                errors=ZIP_ERRORS,
                what="corrupt zip",
                file=path if keep else None,
                spool=stack.enter_context(spool_folder(stream)),
            )
            header_line, columns, body = _split_header(source, chunks)
            tasks = (
                _Task(
                    path,
                    source,
                    plain,
                    header_line,
                    columns,
                    c,
                    out / f"standard-part-{i:05d}.parquet",
                )
                for i, c in enumerate(prepend(detached(body, path) if keep else body, chunks))
            )
            done = list(run_reported(_parse_chunk, tasks, ctx, share_read(stream, text_size)))
        got = gather(source, done)
        totals: list[TotalCheck] = []
        summary_line = None
        if ctx.check_totals:
            hashes = pl.concat([d.hash_lines for d in done])
            totals, summary_line = _totals(source, hashes, done)
        return ParsedBill(
            path=path,
            layout=self.name,
            rows_files=got.rows_files,
            n_rows=got.n_rows,
            quarantine=got.quarantine,
            rows_read=got.rows_read,
            totals=totals,
            summary_line=summary_line,
        )


@dataclass(frozen=True)
class _Task:
    """One chunk of lines after the column header (sent to a worker process)."""

    path: Path
    source: str
    ctx: ParseContext
    header_line: int
    columns: list[str]
    chunk: Chunk
    part: Path


@dataclass(frozen=True)
class _Done:
    part: Path
    n_rows: int
    data_lines: int
    quarantine: pl.DataFrame
    hash_lines: pl.DataFrame  # the chunk's '#' lines (line, text): the footer is among them
    sums: dict[str, Decimal]  # per 业务类型: row count and exact sums of complete rows
    encoding: str
    first_line: int


def _parse_chunk(task: _Task) -> _Done:
    ctx, columns = task.ctx, task.columns
    exponent = CURRENCY_EXPONENTS[ctx.default_currency]
    lines, used = lines_of(task.source, task.chunk)
    data = _fields(_data_lines(lines, task.header_line), columns)
    staged = _stage(data, ctx, task.source, exponent)
    rows, quarantine = split_quarantine(staged, _checks(len(columns)), task.path)
    write_part(rows, task.part)
    complete = data.filter((pl.col("_n") == len(columns)) & pl.col("_ok"))
    hashes = lines.filter(pl.col("text").str.starts_with("#")).select("line", "text")
    return _Done(
        task.part,
        rows.height,
        data.height,
        quarantine,
        hashes,
        _partial_sums(complete, exponent),
        used,
        task.chunk.first_line,
    )


# A preamble of '#' lines longer than this has no column header after it.
_PREAMBLE_LIMIT = 4 << 20


def _split_header(source: str, chunks: Iterator[Chunk]) -> tuple[int, list[str], Chunk]:
    """(header line, column names, the rest of the chunk holding the header)."""
    start: Chunk | None = None  # the chunk the preamble starts in
    data = b""  # the chunks' bytes so far, each read once (a spooled chunk's file goes)
    for chunk in chunks:
        start = chunk if start is None else start
        data += payload(chunk)
        first = Chunk(start.index, start.first_line, data, chunk.last, start.offset)
        lines, _ = lines_of(source, first)
        text = pl.col("text")
        if lines.filter(~text.str.starts_with("#"), text.str.strip_chars() != "").height:
            break
        if len(first.data) > _PREAMBLE_LIMIT:
            break
    header_line, columns = _header(source, lines)
    data = first.data
    cut = 0
    for _ in range(header_line - first.first_line + 1):
        cut = data.find(b"\n", cut) + 1
        if cut == 0:  # the header is the last line
            cut = len(data)
            break
    rest = Chunk(first.index, header_line + 1, data[cut:], first.last, first.offset + cut)
    return header_line, columns, rest


# --- input: zip, gzip or bare CSV -------------------------------------------------------------


def _open(path: Path, stack: ExitStack) -> tuple[str, IO[bytes], int | None]:
    """(source_file, byte stream, its size when the zip says it): the CSV itself, or the
    detail entry of an Alipay zip."""
    stream = stack.enter_context(open_stream(path))
    if stream.read(4) != ZIP_MAGIC:
        stream.seek(0)
        return str(path), stream, None
    stream.seek(0)
    try:
        zf = stack.enter_context(zipfile.ZipFile(stream))
        infos = {zip_entry_name(i): i for i in zf.infolist() if not i.is_dir()}
        name = _pick_entry(path, list(infos))
        entry = stack.enter_context(zf.open(infos[name]))
    except ZIP_ERRORS as exc:
        raise InputError(path, f"corrupt zip: {exc}") from None
    return f"{path}!{name}", entry, infos[name].file_size


def _pick_entry(path: Path, names: list[str]) -> str:
    csvs = [n for n in names if n.lower().endswith(".csv")]
    detail = [n for n in csvs if "业务明细" in n and "汇总" not in n]
    if len(detail) == 1:
        return detail[0]
    if len(csvs) == 1:
        return csvs[0]
    listing = ", ".join(names) or "none"
    raise InputError(path, f"zip holds no single 业务明细 CSV (entries: {listing})")


# --- layout: column header and data lines ----------------------------------------------------


def _header(source: str, lines: pl.DataFrame) -> tuple[int, list[str]]:
    """Line number and column names of the column header: the first line not a '#' line."""
    first = lines.filter(
        ~pl.col("text").str.starts_with("#"), pl.col("text").str.strip_chars() != ""
    )
    if first.is_empty():
        raise InputError(source, "unknown Alipay bill layout: no column header")
    line = int(first["line"][0])
    fields = _fields(first.head(1), []).select(pl.col("_f").list.eval(_clean(pl.element(), True)))
    columns: list[str] = fields.item().to_list()
    if TXN_ID not in columns:
        raise InputError(source, f"unknown Alipay bill layout: no {TXN_ID} column header", line)
    for name in REQUIRED:
        if name not in columns:
            raise InputError(source, "required column missing", line, name)
    return line, columns


def _data_lines(lines: pl.DataFrame, header_line: int) -> pl.DataFrame:
    text = pl.col("text")
    return lines.filter(
        pl.col("line") > header_line, ~text.str.starts_with("#"), text.str.strip_chars() != ""
    )


def _fields(data: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Split each line into ``_f`` (raw fields), ``_n`` (their count), ``_ok`` (quotes sane),
    plus one cleaned string column per required bill column found in ``columns``."""
    text = pl.col("text")
    quoted = bool(data["text"].str.contains('"', literal=True).any())
    if quoted:  # rare, so the slower quote-aware split runs only then
        pieces = (pl.lit(",") + text).str.extract_all(_FIELD)
        split = [
            pieces.list.eval(pl.element().str.slice(1)).alias("_f"),
            (pieces.list.join("") == pl.lit(",") + text).alias("_ok"),  # nothing skipped
        ]
    else:
        split = [text.str.split(",").alias("_f"), pl.lit(True).alias("_ok")]
    fields = pl.col("_f")
    picked = [
        _clean(fields.list.get(columns.index(n), null_on_oob=True), quoted).alias(n)
        for n in REQUIRED
        if n in columns
    ]
    return (
        data.lazy()
        .with_columns(split)
        .with_columns(fields.list.len().alias("_n"), *picked)
        .collect()
    )


def _clean(field: pl.Expr, quoted: bool) -> pl.Expr:
    """Drop the TAB Alipay appends (so Excel keeps long ids as text), blanks and quotes."""
    s = field.str.strip_chars(" \t")
    if not quoted:
        return s
    is_quoted = s.str.starts_with('"') & s.str.ends_with('"') & (s.str.len_chars() >= 2)
    inner = s.str.slice(1, s.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
    return pl.when(is_quoted).then(inner.str.strip_chars(" \t")).otherwise(s)


# --- rows: standard columns and quarantine checks --------------------------------------------


def _stage(data: pl.DataFrame, ctx: ParseContext, source: str, exponent: int) -> pl.DataFrame:
    refund = pl.col(BIZ_TYPE) == REFUND
    fee = pl.col(FEE)
    times = [local_to_utc(pl.col(DONE_AT), f, ctx.timezone) for f in TIME_FORMATS]
    # The other formats only for the rows the first one (Alipay's own) does not read.
    data = data.with_columns(_time=times[0])
    if data.get_column("_time").null_count():
        data = data.with_columns(_time=pl.coalesce(pl.col("_time"), *times[1:]))
    staged = data.lazy().with_columns(
        _amount=to_minor(pl.col(AMOUNT), exponent),  # signed as in the bill, for the checks
        trade_time=pl.col("_time"),
    )
    return staged.with_columns(
        channel=pl.lit(ctx.channel),
        channel_txn_id=pl.col(TXN_ID),
        channel_refund_id=pl.lit(""),  # the detail bill has no refund number of Alipay's own
        merchant_order_id=pl.col(ORDER_ID),
        merchant_refund_id=pl.when(refund).then(pl.col(REFUND_ID)).otherwise(pl.lit("")),
        txn_type=pl.when(refund).then(pl.lit("refund")).otherwise(pl.lit("payment")),
        amount_minor=pl.col("_amount").abs(),
        # Alipay shows a charged fee as negative; ours is positive when charged.
        fee_minor=pl.when(fee == "").then(pl.lit(0, pl.Int64)).otherwise(-to_minor(fee, exponent)),
        currency=pl.lit(ctx.default_currency),
        channel_status=pl.col(BIZ_TYPE),
        status=pl.col(BIZ_TYPE).replace(dict(ctx.status_map)),
        business_date=business_date(pl.col("trade_time"), ctx.timezone),
        source_file=pl.lit(source),
        source_line=pl.col("line"),
        raw=pl.col("text"),
    ).collect()


def _checks(width: int) -> list[RowCheck]:
    n, kind, amount = pl.col("_n"), pl.col(BIZ_TYPE), pl.col("_amount")
    ragged = pl.format("expected {} fields as in the column header, found {}", pl.lit(width), n)
    hint = (
        pl.when(n > width).then(pl.lit(" (a comma inside 商品名称 or 备注?)")).otherwise(pl.lit(""))
    )
    return [
        RowCheck(ROW, n != width, pl.concat_str(ragged, hint)),
        RowCheck(ROW, ~pl.col("_ok"), "malformed double quotes"),
        RowCheck(
            BIZ_TYPE, ~kind.is_in([PAYMENT, REFUND]), pl.format("unsupported 业务类型 {}", kind)
        ),
        RowCheck(TXN_ID, pl.col(TXN_ID) == "", f"empty {TXN_ID}"),
        RowCheck(ORDER_ID, pl.col(ORDER_ID) == "", f"empty {ORDER_ID}"),
        RowCheck(AMOUNT, amount.is_null(), _bad("not an amount", AMOUNT)),
        RowCheck(AMOUNT, (kind == PAYMENT) & (amount < 0), _bad("wrong sign for 交易", AMOUNT)),
        RowCheck(AMOUNT, (kind == REFUND) & (amount > 0), _bad("wrong sign for 退款", AMOUNT)),
        RowCheck(FEE, pl.col("fee_minor").is_null(), _bad("not an amount", FEE)),
        RowCheck(DONE_AT, pl.col("trade_time").is_null(), _bad("not a time", DONE_AT)),
    ]


def _bad(what: str, column: str) -> pl.Expr:
    return pl.format(f'{what}: "{{}}"', pl.col(column))


# --- control totals from the footer ----------------------------------------------------------


def _partial_sums(complete: pl.DataFrame, exponent: int) -> dict[str, Decimal]:
    """Per 业务类型: how many complete rows, and the exact sums of their 商家实收 / 商家优惠."""
    minor = complete.select(
        BIZ_TYPE,
        *(pl.col(c) for c in (RECEIVED, DISCOUNT)),
        *(to_minor(pl.col(c), exponent).alias(_minor(c)) for c in (RECEIVED, DISCOUNT)),
    )
    sums: dict[str, Decimal] = {}
    for kind in _FOOTERS:
        rows = minor.filter(pl.col(BIZ_TYPE) == kind)
        sums[f"{kind}:count"] = Decimal(rows.height)
        for column in (RECEIVED, DISCOUNT):
            sums[f"{kind}:{column}"] = _exact_sum(rows, column, exponent)
    return sums


def _totals(
    source: str, hash_lines: pl.DataFrame, done: list[_Done]
) -> tuple[list[TotalCheck], int]:
    """The footer's counts and sums against every complete data row, quarantined ones too."""

    def total(key: str) -> Decimal:
        return sum((d.sums[key] for d in done), Decimal(0))

    checks: list[TotalCheck] = []
    summary_line = 0
    for kind, (label, pattern) in _FOOTERS.items():
        line, count, received, discount = _footer(source, hash_lines, label, pattern)
        if kind == PAYMENT:
            summary_line = line
        checks += [
            TotalCheck(f"{label} 笔数", count, total(f"{kind}:count")),
            TotalCheck(f"{label} 商家实收", received, total(f"{kind}:{RECEIVED}")),
            TotalCheck(f"{label} 商家优惠", discount, total(f"{kind}:{DISCOUNT}")),
        ]
    return checks, summary_line


def _footer(
    source: str, hash_lines: pl.DataFrame, label: str, pattern: re.Pattern[str]
) -> tuple[int, Decimal, Decimal, Decimal]:
    """(line, count, 商家实收, 商家优惠) of the '#<label>' footer line (after the header)."""
    found = hash_lines.filter(pl.col("text").str.starts_with(f"#{label}"))
    if found.is_empty():
        raise InputError(source, f"no footer totals ({label}): bill incomplete?")
    line, text = int(found["line"][0]), str(found["text"][0]).strip()
    m = pattern.match(text)
    figures = [decimal_or_none(g) for g in m.groups()] if m else []
    if not figures or None in figures:
        raise InputError(source, f"unrecognised footer totals {text!r}", line)
    count, received, discount = (d for d in figures if d is not None)
    return line, count, received, discount


def _exact_sum(rows: pl.DataFrame, column: str, exponent: int) -> Decimal:
    """Exact sum of a column of decimal strings: minor units summed by polars, the odd value
    with more decimals than the currency has through Decimal."""
    minor = rows[_minor(column)]
    total = Decimal(int(minor.sum())).scaleb(-exponent)
    odd = rows.filter(minor.is_null() & (pl.col(column).str.strip_chars() != ""))[column]
    for text in odd.to_list():
        d = decimal_or_none(text)
        total += d if d is not None else 0
    return total


def _minor(column: str) -> str:
    return f"{column}:minor"
