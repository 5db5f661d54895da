"""WeChat Pay v2 trade bill (对账单, ``/pay/downloadbill``): ALL, SUCCESS, REFUND and legacy.

The file is a header row of Chinese column names, data rows whose every value is
prefixed with a backtick and not quoted, then a summary block (a header line
starting with 总交易单数 and one values line). Columns are found by name, never
by position, because WeChat has changed the layout over the years.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

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
    prepend,
    run_reported,
    share_read,
    spool_folder,
    work_dir,
)
from parsers.common import RowCheck, business_date, local_to_utc, split_quarantine
from recon.currency import CURRENCY_EXPONENTS
from recon.errors import InputError
from recon.money import decimal_or_none, to_minor_by_currency
from recon.parts import write_part

SEP = ",`"  # between data values; a bare comma may occur inside goods names
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUMMARY_START = "总交易单数"
ROW = "(row)"  # quarantine "column" for a row that cannot be split into fields
# Free text that may itself contain SEP: surplus pieces of a row are rejoined into it.
# (商户数据包 may contain SEP too, but which of the two it was cannot be told;
# neither reaches the standard bill.)
ELASTIC = "商品名称"

BASE_REQUIRED = ("交易时间", "微信订单号", "商户订单号", "交易状态", "手续费", ELASTIC)
REFUND_REQUIRED = ("微信退款单号", "商户退款单号", "退款金额", "退款状态")

# Summary column -> data column it totals; 总交易单数 counts the data rows instead.
# A summary figure for a column the layout lacks (SUCCESS bills report 退款总金额)
# is checked against zero.
SUMMARY_SOURCES: dict[str, str] = {
    "应结订单总金额": "应结订单金额",
    "总交易额": "总金额",
    "退款总金额": "退款金额",
    "总退款金额": "退款金额",
    "手续费总金额": "手续费",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
    "充值券退款总金额": "充值券退款金额",
    "总代金券或立减优惠退款金额": "代金券或立减优惠退款金额",
}


@dataclass(frozen=True)
class Layout:
    """A header row, read by column name."""

    columns: tuple[str, ...]

    def has(self, column: str) -> bool:
        return column in self.columns

    @property
    def legacy(self) -> bool:  # merchants without 免充值券 (pre-2018): 总金额, 子商户号
        return self.has("总金额")

    @property
    def refund_bill(self) -> bool:  # bill_type=REFUND: every row is a refund
        return self.has("退款成功时间") or self.has("退款申请时间")

    @property
    def has_refunds(self) -> bool:
        return self.refund_bill or self.has("微信退款单号")

    @property
    def name(self) -> str:
        kind = "REFUND" if self.refund_bill else "ALL" if self.has_refunds else "SUCCESS"
        return f"LEGACY_{kind}" if self.legacy else kind

    @property
    def payment_amount(self) -> str:
        for col in ("订单金额", "应结订单金额", "总金额"):
            if self.has(col):
                return col
        raise AssertionError("detect_layout admits no layout without an amount column")

    @property
    def refund_amount(self) -> str:
        return "申请退款金额" if self.has("申请退款金额") else "退款金额"

    @property
    def used(self) -> frozenset[str]:
        """The columns parsing reads: the standard row's sources and the summed ones."""
        wanted = {*self.required, self.payment_amount, "货币种类", "退款成功时间"}
        if self.has_refunds:
            wanted.add(self.refund_amount)
        wanted.update(SUMMARY_SOURCES.values())
        return frozenset(c for c in self.columns if c in wanted)

    @property
    def required(self) -> tuple[str, ...]:
        refund = REFUND_REQUIRED if self.has_refunds else ()
        times = ("退款成功时间",) if self.refund_bill else ()
        return BASE_REQUIRED + refund + times


@dataclass(frozen=True)
class Summary:
    header_line: int
    values_line: int
    figures: dict[str, Decimal]


def detect_layout(path: Path, header: str) -> Layout:
    """The layout named by ``header``; unknown or incomplete headers are InputErrors."""
    columns = tuple(c.strip() for c in header.split(","))
    layout = Layout(columns)
    if not (layout.has("交易时间") and (layout.has("应结订单金额") or layout.has("总金额"))):
        shown = (header if len(header) <= 120 else header[:120] + "...") or "(empty line)"
        raise InputError(path, f"unknown WeChat Pay bill layout: {shown}", line=1)
    seen: set[str] = set()
    for col in columns:
        if col in seen:
            raise InputError(path, f"duplicate column {col!r} in header", line=1, column=col)
        seen.add(col)
    for col in layout.required:
        if not layout.has(col):
            raise InputError(
                path, f"{layout.name} bill lacks required column {col!r}", line=1, column=col
            )
    return layout


def find_summary(path: Path, lines: pl.DataFrame) -> Summary:
    """The summary block; its absence means the bill was cut short."""
    text = pl.col("text").str.strip_chars()
    starts = lines.filter((pl.col("line") > 1) & text.str.starts_with(SUMMARY_START))
    if starts.height == 0:
        raise InputError(path, "no summary block: bill incomplete?")
    header_line, header = starts.row(0)
    after = lines.filter((pl.col("line") > header_line) & (text != ""))
    if after.height == 0:
        raise InputError(path, "summary block has no values line: bill incomplete?", header_line)
    if after.height > 1:
        raise InputError(path, "unexpected line after the summary block", after.item(1, "line"))
    values_line, values = after.row(0)
    names = [n.strip() for n in header.split(",")]
    raw = [v.strip().removeprefix("`") for v in values.split(",")]
    if len(names) != len(raw):
        raise InputError(
            path, f"summary has {len(raw)} values for {len(names)} columns", values_line
        )
    figures: dict[str, Decimal] = {}
    for name, value in zip(names, raw, strict=True):
        number = decimal_or_none(value)
        if number is None:
            raise InputError(path, f"summary value is not a number: {value!r}", values_line, name)
        figures[name] = number
    return Summary(header_line, values_line, figures)


def split_fields(
    data: pl.DataFrame, columns: tuple[str, ...], keep: frozenset[str] | None = None
) -> pl.DataFrame:
    """Data lines -> one string column per bill column, plus ``line``, ``raw``, ``_n``.

    Fields before the elastic column are counted from the start, those after it
    from the end, and whatever lies between is the elastic value. A row with
    fewer fields than the header gets nulls everywhere: its values cannot be placed.
    With ``keep``, only those columns are made (a big bill's rows are many).
    """
    width, elastic = len(columns), columns.index(ELASTIC)
    pieces, n = pl.col("_p"), pl.col("_n")

    def field(i: int) -> pl.Expr:
        if i == elastic:
            value = pieces.list.slice(elastic, n - width + 1).list.join(SEP)
        else:
            value = pieces.list.get(i if i < elastic else i - width, null_on_oob=True)
        return pl.when(n >= width).then(value).alias(columns[i])

    split = data.with_columns(
        pl.col("text").str.strip_prefix("`").str.split(SEP).alias("_p")
    ).with_columns(pl.col("_p").list.len().cast(pl.Int64).alias("_n"))
    wanted = [i for i, c in enumerate(columns) if keep is None or c in keep]
    if split.height and bool((split.get_column("_n") == width).all()):
        # Every row has exactly the header's fields (the usual bill): field i is piece i.
        fields = [pieces.list.get(i).alias(columns[i]) for i in wanted]
    else:
        fields = [field(i) for i in wanted]
    return split.select("line", pl.col("text").alias("raw"), "_n", *fields)


def _clean(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars()


def _local_time(column: str, tz: str) -> pl.Expr:
    # The legacy layout writes full-width colons (16：33：45).
    text = _clean(column).str.replace_all("：", ":", literal=True)
    return local_to_utc(text, TIME_FORMAT, tz)


def _is_refund(layout: Layout) -> pl.Expr:
    if layout.refund_bill:
        return pl.lit(True)
    return _clean("交易状态") == "REFUND"


def _if_refund(layout: Layout, column: str) -> pl.Expr:
    """``column`` for refunds, empty for payments (whose refund ids WeChat writes as 0)."""
    if not layout.has_refunds:
        return pl.lit("")
    return pl.when(pl.col("_refund")).then(_clean(column)).otherwise(pl.lit(""))


def _currency(layout: Layout, default: str) -> pl.Expr:
    if not layout.has("货币种类"):
        return pl.lit(default)
    code = _clean("货币种类").str.to_uppercase()
    return pl.when(code == "").then(pl.lit(default)).otherwise(code)


def _amount_raw(layout: Layout) -> pl.Expr:
    pay = pl.col(layout.payment_amount)
    if not layout.has_refunds:
        return pay
    return pl.when(pl.col("_refund")).then(pl.col(layout.refund_amount)).otherwise(pay)


def _channel_status(layout: Layout) -> pl.Expr:
    if not layout.has_refunds:
        return _clean("交易状态")
    return pl.when(pl.col("_refund")).then(_clean("退款状态")).otherwise(_clean("交易状态"))


def _trade_time(layout: Layout) -> pl.Expr:
    if not layout.refund_bill:
        return pl.col("_txn_time")
    use_refund_time = pl.col("_refund") & (_clean("退款成功时间") != "")
    return pl.when(use_refund_time).then(pl.col("_refund_time")).otherwise(pl.col("_txn_time"))


def stage(fields: pl.DataFrame, layout: Layout, ctx: ParseContext, path: Path) -> pl.DataFrame:
    """Standard columns (nulls where a value does not parse) plus helpers for the checks."""
    tz = ctx.timezone
    refund_time = _local_time("退款成功时间", tz) if layout.refund_bill else pl.lit(None)
    kind = pl.when(pl.col("_refund")).then(pl.lit("refund")).otherwise(pl.lit("payment"))
    return (
        fields.with_columns(
            _is_refund(layout).alias("_refund"),
            _currency(layout, ctx.default_currency).alias("currency"),
            _local_time("交易时间", tz).alias("_txn_time"),
            refund_time.cast(pl.Datetime("us", "UTC")).alias("_refund_time"),
        )
        .with_columns(
            pl.lit(ctx.channel).alias("channel"),
            _clean("微信订单号").alias("channel_txn_id"),
            _if_refund(layout, "微信退款单号").alias("channel_refund_id"),
            _clean("商户订单号").alias("merchant_order_id"),
            _if_refund(layout, "商户退款单号").alias("merchant_refund_id"),
            kind.alias("txn_type"),
            _amount_raw(layout).alias("_amount"),
            to_minor_by_currency(pl.col("手续费"), pl.col("currency")).alias("fee_minor"),
            _channel_status(layout).alias("channel_status"),
            _trade_time(layout).alias("trade_time"),
            pl.lit(str(path)).alias("source_file"),
            pl.col("line").alias("source_line"),
        )
        .with_columns(
            to_minor_by_currency(pl.col("_amount"), pl.col("currency")).alias("amount_minor"),
            pl.col("channel_status").replace(dict(ctx.status_map)).alias("status"),
            business_date(pl.col("trade_time"), tz).alias("business_date"),
        )
    )


def row_checks(layout: Layout) -> list[RowCheck]:
    """Why a row goes to quarantine, named by the bill's column; the first match wins."""
    width = len(layout.columns)
    shape = RowCheck(
        ROW,
        pl.col("_n") < width,
        pl.format("{} fields where the header has {}", "_n", pl.lit(width)),
    )
    return [shape, *_id_checks(layout), *_money_checks(layout), *_time_status_checks(layout)]


def _id_checks(layout: Layout) -> list[RowCheck]:
    refund = pl.col("_refund")
    checks = []
    if not layout.has_refunds:
        checks.append(RowCheck("交易状态", refund, "REFUND row in a bill without refund columns"))
    checks += [
        RowCheck("商户订单号", pl.col("merchant_order_id") == "", "empty 商户订单号"),
        RowCheck("微信订单号", pl.col("channel_txn_id") == "", "empty 微信订单号"),
    ]
    if layout.has_refunds:
        empty = refund & (pl.col("merchant_refund_id") == "")
        checks.append(RowCheck("商户退款单号", empty, "empty 商户退款单号"))
    return checks


def _money_checks(layout: Layout) -> list[RowCheck]:
    currency, amount = pl.col("currency"), pl.col("_amount")
    unknown = ~currency.is_in(sorted(CURRENCY_EXPONENTS))
    checks = [RowCheck("货币种类", unknown, pl.format("unknown currency '{}'", currency))]
    not_exact = pl.format("not an exact {} amount: '{}'", currency, amount)
    negative = pl.format("negative amount '{}'", amount)
    for column, applies in _amount_columns(layout):
        checks += [
            RowCheck(column, applies & pl.col("amount_minor").is_null(), not_exact),
            RowCheck(column, applies & (pl.col("amount_minor") < 0), negative),
        ]
    fee = pl.format("fee not exact in {} minor units: '{}'", currency, "手续费")
    checks.append(RowCheck("手续费", pl.col("fee_minor").is_null(), fee))
    return checks


def _amount_columns(layout: Layout) -> list[tuple[str, pl.Expr]]:
    """(bill column the amount came from, rows it applies to)."""
    refund = pl.col("_refund")
    if not layout.has_refunds:
        return [(layout.payment_amount, pl.lit(True))]
    if layout.refund_bill:
        return [(layout.refund_amount, refund)]
    return [(layout.payment_amount, ~refund), (layout.refund_amount, refund)]


def _time_status_checks(layout: Layout) -> list[RowCheck]:
    refund, status = pl.col("_refund"), pl.col("channel_status")
    not_time = f"not a time ({TIME_FORMAT}): '{{}}'"
    checks = [
        RowCheck("交易时间", pl.col("_txn_time").is_null(), pl.format(not_time, "交易时间")),
    ]
    if layout.refund_bill:
        bad = (_clean("退款成功时间") != "") & pl.col("_refund_time").is_null()
        checks.append(RowCheck("退款成功时间", bad, pl.format(not_time, "退款成功时间")))
    checks.append(RowCheck("交易状态", ~refund & (status == ""), "empty 交易状态"))
    if layout.has_refunds:
        checks.append(RowCheck("退款状态", refund & (status == ""), "empty 退款状态"))
    return checks


def decimal_sum(values: pl.Series) -> Decimal:
    """Exact sum of decimal strings; a non-number adds nothing and shows as a difference.

    Values spelled plainly (``-12.50``, ``0.12000``, ``7``) are summed in polars as integers
    at the finest scale among them; any other value goes through Decimal, once per
    distinct value. The result is the Decimal the plain loop would give, exponent included.
    """
    values = values.drop_nulls().cast(pl.String)
    same_scale = _same_scale_sum(values)
    if same_scale is not None:
        return same_scale
    plain = values.str.contains(_PLAIN_DECIMAL)
    total = _plain_sum(values.filter(plain))
    if total is None:  # too large for the integer sum to stay exact: all through Decimal
        return _decimal_loop(values, Decimal(0))
    return _decimal_loop(values.filter(~plain), total)


# At most 15 integer and 9 decimal digits: Int64 holds each part of every value.
_PLAIN_DECIMAL = r"^[+-]?[0-9]{1,15}(?:\.[0-9]{1,9})?$"


def _same_scale_sum(values: pl.Series) -> Decimal | None:
    """The sum when every value is ``-?digits.digits`` with as many decimals as the first
    (``12.50``, ``0.12000``), the usual column; None otherwise or when it might overflow."""
    if values.len() == 0:
        return None
    first = re.fullmatch(r"-?[0-9]+(?:\.([0-9]{1,9}))?", str(values[0]))
    if first is None:
        return None
    scale = len(first.group(1) or "")
    frac = rf"\.[0-9]{{{scale}}}" if scale else ""
    if not values.str.contains(rf"^-?[0-9]{{1,{18 - scale}}}{frac}$").all():
        return None
    minor = values.str.replace(".", "", literal=True).cast(pl.Int64)
    if float(minor.abs().cast(pl.Float64).sum()) >= 1e18:
        return None
    return Decimal(int(minor.sum())).scaleb(-scale)


def _plain_sum(values: pl.Series) -> Decimal | None:
    """Exact sum of values matching ``_PLAIN_DECIMAL`` (``Decimal(0)`` when none), or None
    when the sum might leave the range where the Decimal loop is exact (28 digits)."""
    if values.len() == 0:
        return Decimal(0)
    v = pl.col("v")
    body = v.str.strip_chars_start("+-")
    dot = body.str.find(".", literal=True)
    parts = (
        values.rename("v")
        .to_frame()
        .select(
            v.str.starts_with("-").alias("neg"),
            pl.when(dot.is_null()).then(body).otherwise(body.str.slice(0, dot)).alias("whole"),
            pl.when(dot.is_null())
            .then(pl.lit(""))
            .otherwise(body.str.slice(dot + 1))
            .alias("frac"),
        )
    )
    scale = int(parts.select(pl.col("frac").str.len_bytes().max()).item() or 0)
    frac = pl.col("frac").str.pad_end(scale, "0").cast(pl.Int64) if scale else pl.lit(0, pl.Int64)
    sums = (
        parts.select(pl.col("neg"), pl.col("whole").cast(pl.Int64), frac.alias("frac"))
        .select(
            pl.col("whole").cast(pl.Float64).sum().alias("bound"),
            pl.when(pl.col("neg")).then(-pl.col("whole")).otherwise(pl.col("whole")).sum(),
            pl.when(pl.col("neg")).then(-pl.col("frac")).otherwise(pl.col("frac")).sum(),
            pl.col("whole").sum().alias("abs_whole"),
            pl.col("frac").sum().alias("abs_frac"),
        )
        .row(0)
    )
    bound, whole_sum, frac_sum, abs_whole, abs_frac = sums
    if bound >= 1e18 or int(abs_whole) * 10**scale + int(abs_frac) >= 10**26:
        return None
    return Decimal(int(whole_sum) * 10**scale + int(frac_sum)).scaleb(-scale)


def _decimal_loop(values: pl.Series, total: Decimal) -> Decimal:
    """Add every value through Decimal, once per distinct value."""
    for value, count in values.value_counts().iter_rows():
        number = decimal_or_none(value)
        if number is not None:
            total += number * count
    return total


@dataclass(frozen=True)
class _Task:
    """One chunk of data lines and what parsing it needs (sent to a worker process)."""

    path: Path
    ctx: ParseContext
    layout: Layout
    chunk: Chunk
    part: Path


@dataclass(frozen=True)
class _Done:
    part: Path
    n_rows: int
    data_lines: int
    quarantine: pl.DataFrame
    sums: dict[str, Decimal]  # exact sums of the summed columns over every data line
    encoding: str
    first_line: int
    # The chunk's first few non-empty lines, and (when the summary starts in this chunk)
    # the summary's first few: as many as find_summary needs to judge the block.
    lead: pl.DataFrame
    summary: pl.DataFrame | None


# The summary block starts with a line whose text, stripped, begins with 总交易单数.
_SUMMARY_LINE = rf"^\s*{SUMMARY_START}"
# The summary's header, its values line and one more (which is an error) suffice.
_TAIL_LINES = 3


def _parse_chunk(task: _Task) -> _Done:
    """The chunk's data lines, up to the summary block's start if the chunk holds it.

    The worker looks for the summary itself, in lines it has split anyway: searching
    every chunk's bytes in the parent took half the parent's CPU, on the cores the
    workers need.
    """
    lines, used = lines_of(task.path, task.chunk)
    filled = lines.filter(pl.col("text").str.strip_chars() != "")
    starts = filled.get_column("text").str.contains(_SUMMARY_LINE).arg_true()
    at = int(starts[0]) if starts.len() else None
    data = filled if at is None else filled.head(at)
    summary = None if at is None else filled.slice(at, _TAIL_LINES)
    fields = split_fields(data, task.layout.columns, task.layout.used)
    staged = stage(fields, task.layout, task.ctx, task.path)
    rows, quarantine = split_quarantine(staged, row_checks(task.layout), task.path)
    write_part(rows, task.part)
    sources = {s for s in SUMMARY_SOURCES.values() if s in fields.columns}
    sums = {s: decimal_sum(fields[s]) for s in sorted(sources)}
    return _Done(
        task.part, rows.height, data.height, quarantine, sums, used, task.chunk.first_line,
        lead=filled.head(_TAIL_LINES), summary=summary,
    )  # fmt: skip


def _header(path: Path, chunks: Iterator[Chunk]) -> tuple[str, Chunk]:
    """The header line's text, and the rest of the first chunk (from line 2)."""
    first = next(chunks)
    end = first.data.find(b"\n")
    head_bytes = first.data if end == -1 else first.data[: end + 1]
    rest = b"" if end == -1 else first.data[end + 1 :]
    head = Chunk(0, 1, head_bytes, last=end == -1 and first.last)
    lines, _ = lines_of(path, head)
    body = Chunk(first.index, 2, rest, first.last, first.offset + len(head_bytes))
    return str(lines.item(0, "text")), body


def _has_summary(done: _Done) -> bool:
    return done.summary is not None


def _split_at_summary(done: list[_Done]) -> tuple[list[_Done], pl.DataFrame]:
    """(the chunks up to the summary's, the summary's first lines and any after it).

    Chunks after the one the summary starts in hold no data: whatever they parsed is
    dropped, and their first lines go to the tail, where find_summary judges them.
    """
    found = [(i, d.summary) for i, d in enumerate(done) if d.summary is not None]
    if not found:
        return done, pl.DataFrame(schema={"line": pl.Int64, "text": pl.String})
    at, summary = found[0]
    for d in done[at + 1 :]:
        d.part.unlink(missing_ok=True)
    tail = pl.concat([summary, *(d.lead for d in done[at + 1 :])])
    return done[: at + 1], tail.head(_TAIL_LINES)


def _totals(summary: Summary, done: list[_Done]) -> list[TotalCheck]:
    """The bill's own totals against the raw values of every data row, quarantined or not."""
    lines = sum(d.data_lines for d in done)
    checks = []
    for name, expected in summary.figures.items():
        if name == SUMMARY_START:
            actual = Decimal(lines)
        elif name in SUMMARY_SOURCES:
            source = SUMMARY_SOURCES[name]
            actual = sum((d.sums.get(source, Decimal(0)) for d in done), Decimal(0))
        else:
            continue  # a figure we do not know how to recompute
        checks.append(TotalCheck(name, expected, actual))
    return checks


class WechatPayV2Parser:
    name: ClassVar[str] = "wechatpay_v2"

    def parse(self, path: Path, ctx: ParseContext) -> ParsedBill:
        out = work_dir(ctx.work_dir)
        plain = replace(ctx, status_map=dict(ctx.status_map), work_dir=None, progress=None)
        with open_stream(path) as stream, spool_folder(stream) as spool:
            keep = in_file(stream)  # then workers read their lines from the file itself
            chunks = iter_chunks(
                path, stream, ctx.chunk_bytes or CHUNK_BYTES,
                file=path if keep else None, spool=spool,
            )  # fmt: skip
            header, first = _header(path, chunks)
            layout = detect_layout(path, header)
            tasks = (
                _Task(
                    path, plain, layout, c,
                    out / f"standard-part-{i:05d}.parquet",
                )
                for i, c in enumerate(prepend(detached(first, path) if keep else first, chunks))
            )  # fmt: skip
            share = share_read(stream)
            done = list(run_reported(_parse_chunk, tasks, ctx, share, _has_summary))
        body, tail = _split_at_summary(done)
        got = gather(path, body)
        summary = find_summary(path, tail)
        return ParsedBill(
            path=path,
            layout=layout.name,
            rows_files=got.rows_files,
            n_rows=got.n_rows,
            quarantine=got.quarantine,
            rows_read=got.rows_read,
            totals=_totals(summary, body),
            summary_line=summary.values_line,
        )
