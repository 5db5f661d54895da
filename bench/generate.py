"""Generate a large channel-day fast: a real-format bill, the matching ledger export and
the expected answer, all vectorised in polars (no per-row Python loop).

``python -m bench.generate --rows 1000000 --channel wechatpay --out bench/work/1000000``

Writes into ``--out``:

- the bill: ``wechatpay_<day>_ALL.csv`` (WeChat Pay v2 ALL layout: header row,
  backtick-prefixed values, summary block with exact totals, CRLF) or
  ``alipay_<day>.csv`` (业务明细, GBK, ``#`` preamble and footer totals, values ending
  with TAB); ``--gzip`` compresses it (``.csv.gz``), as the parsers accept;
- ``ledger_<day>.csv``: the ledger export of the README's ledger contract, rows in a
  shuffled order (an export is not in bill order: slices of ``SLICE_ROWS`` transactions
  in a shuffled order, each shuffled);
- ``expected.json``: rows per outcome as recon must find them, for a correctness check.

``--rows`` counts transactions (payments and refunds). One in ten is a partial refund of
the payment before it. About 0.1% of each break kind is injected: local_missing (ledger
lacks it), channel_missing (bill lacks it), amount and status mismatches; plus 0.1%
CLOSED ledger orders the bill never lists (ledger_unsettled, not a break). Order ids mix
the traps of the real world: zero padding, 18-digit numbers, ``123E4``-like ids.
Deterministic for a given ``--seed``. Made ``SLICE_ROWS`` transactions at a time, so
memory stays flat at any size (100M rows: about 40 GB plain, 15 GB with ``--gzip``;
bench.run checks the disk first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import random
import time
from pathlib import Path

import polars as pl

from data.generate import ALIPAY_HEADER, LEDGER_HEADER, WECHAT_HEADER, WECHAT_SUMMARY

CHANNELS = ("wechatpay", "alipay")
CHUNK_ROWS = 500_000  # bill lines rendered and written per slice: bounds memory
SLICE_ROWS = 2_000_000  # transactions computed at a time: a 100M-row day never exists whole
_MOD = 4_294_967_291  # a prime below 2**32: products stay inside Int64

# Break kinds, chosen by the transaction index modulo 1000 (about 0.1% each).
LOCAL_MISSING, CHANNEL_MISSING, AMOUNT_MISMATCH, STATUS_MISMATCH, UNSETTLED = (
    101,
    309,
    505,
    707,
    911,
)


def _rand(x: pl.Expr, salt: int) -> pl.Expr:
    """A deterministic pseudo-random non-negative Int64 per row (two LCG rounds mod a prime)."""
    r = (x * 2_654_435_761 + salt * 40_503 + 12_345) % _MOD
    return (r * 48_271 + salt) % _MOD


def _pad(x: pl.Expr, width: int) -> pl.Expr:
    return x.cast(pl.String).str.pad_start(width, "0")


def _yuan(fen: pl.Expr) -> pl.Expr:
    """Signed minor units -> ``12.50`` / ``-12.50``."""
    mag = fen.abs()
    sign = pl.when(fen < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return pl.concat_str(sign, (mag // 100).cast(pl.String), pl.lit("."), _pad(mag % 100, 2))


def _clock(seconds: pl.Expr) -> pl.Expr:
    """Seconds of the day -> ``HH:MM:SS``."""
    return pl.concat_str(
        _pad(seconds // 3600, 2),
        pl.lit(":"),
        _pad(seconds // 60 % 60, 2),
        pl.lit(":"),
        _pad(seconds % 60, 2),
    )


def truth(
    rows: int,
    channel: str,
    day: dt.date,
    seed: int = 7,
    start: int = 0,
    stop: int | None = None,
) -> pl.DataFrame:
    """One row per transaction: the facts both files are written from, plus break flags.

    Transactions ``start`` to ``stop`` (default: all ``rows``) of the day; every value is
    a function of the transaction's index and ``rows``, so slices can be made apart."""
    i = pl.col("i")
    refund = i % 10 == 9  # a partial refund of the payment just before it
    order_no = pl.when(refund).then(i - 1).otherwise(i)
    kind = order_no % 4
    order_id = (
        pl.when(kind == 0)
        .then(_pad(order_no, 12))  # leading zeros
        .when(kind == 1)
        .then((order_no + 10**17 * (1 + order_no % 9)).cast(pl.String))  # 18 digits
        .when(kind == 2)
        .then(pl.format("{}E{}", order_no, order_no % 10))  # reads as a float elsewhere
        .otherwise(pl.concat_str(pl.lit(channel[:2].upper()), _pad(order_no, 10)))
    )
    pay_amount = (
        pl.when(order_no % 7 == 0).then(pl.lit(1999)).otherwise(_rand(order_no, seed) % 500_000 + 1)
    )
    prefix = "4200" if channel == "wechatpay" else f"{day:%Y%m%d}"
    width = 28 - len(prefix) - 12
    txn_id = pl.concat_str(
        pl.lit(prefix), _pad(order_no, 12), _pad(_rand(order_no, seed + 1) % 10**width, width)
    )
    end = rows if stop is None else stop
    frame = pl.DataFrame({"i": pl.int_range(start, end, eager=True, dtype=pl.Int64)})
    seconds = (order_no * 86_000) // max(rows, 1) + pl.when(refund).then(60).otherwise(0)
    return frame.with_columns(
        refund.alias("refund"),
        order_id.alias("order_id"),
        pl.when(refund)
        .then(pl.concat_str(pl.lit("R"), order_id, pl.lit("-0")))
        .otherwise(pl.lit(""))
        .alias("refund_id"),
        txn_id.alias("txn_id"),
        pl.concat_str(pl.lit("50"), _pad(i, 12), _pad(_rand(i, seed + 2) % 10**14, 14)).alias(
            "refund_txn_id"
        ),
        pl.when(refund)
        .then(pl.max_horizontal(pay_amount // 3, pl.lit(1)))
        .otherwise(pay_amount)
        .alias("fen"),
        seconds.alias("seconds"),
        (i % 1000).alias("_r"),
    ).with_columns(
        # WeChat/Alipay fee: 0.6% rounded half up; signed as each format writes it below.
        ((pl.col("fen") * 6 + 500) // 1000).alias("fee"),
        pl.concat_str(pl.lit(f"{day:%Y-%m-%d} "), _clock(pl.col("seconds"))).alias("local_time"),
    )


def _in_bill(t: pl.DataFrame) -> pl.DataFrame:
    return t.filter(~pl.col("_r").is_in([CHANNEL_MISSING, UNSETTLED]))


def _in_ledger(t: pl.DataFrame) -> pl.DataFrame:
    return t.filter(pl.col("_r") != LOCAL_MISSING)


def wechat_lines(bill: pl.DataFrame) -> pl.Series:
    """Data lines of the ALL layout (27 columns, every value prefixed with a backtick)."""
    refund = pl.col("refund")
    settle = pl.when(refund).then(pl.lit("0.00")).otherwise(_yuan(pl.col("fen")))
    refunded = pl.when(refund).then(_yuan(pl.col("fen"))).otherwise(pl.lit("0.00"))
    fee = pl.when(refund).then(-pl.col("fee")).otherwise(pl.col("fee"))
    values = [
        pl.col("local_time"), pl.lit("wx2421b1c4370ec43b"), pl.lit("10000100"), pl.lit("0"),
        pl.lit(""), pl.col("txn_id"), pl.col("order_id"), pl.lit("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        pl.lit("JSAPI"), pl.when(refund).then(pl.lit("REFUND")).otherwise(pl.lit("SUCCESS")),
        pl.lit("CMB_DEBIT"), pl.lit("CNY"), settle, pl.lit("0.00"),
        pl.when(refund).then(pl.col("refund_txn_id")).otherwise(pl.lit("0")),
        pl.when(refund).then(pl.col("refund_id")).otherwise(pl.lit("0")),
        refunded, pl.lit("0.00"),
        pl.when(refund).then(pl.lit("ORIGINAL")).otherwise(pl.lit("")),
        pl.when(refund).then(pl.lit("SUCCESS")).otherwise(pl.lit("")),
        pl.lit("会员卡, 年费 (12个月)"), pl.lit("attach,data"),
        pl.concat_str(_yuan(fee), pl.lit("000")), pl.lit("0.60%"), settle, refunded, pl.lit(""),
    ]  # fmt: skip
    line = pl.concat_str(pl.lit("`"), pl.concat_str(values, separator=",`"))
    return bill.select(line.alias("line")).to_series()


def _yuan_text(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def wechat_sums(bill: pl.DataFrame) -> dict[str, int]:
    """The summary block's figures of these bill rows (they add up across slices)."""
    sums = bill.select(
        pl.len().alias("n"),
        pl.col("fen").filter(~pl.col("refund")).sum().alias("settle"),
        pl.col("fen").filter(pl.col("refund")).sum().alias("refund"),
        (pl.when(pl.col("refund")).then(-pl.col("fee")).otherwise(pl.col("fee")))
        .sum()
        .alias("fee"),
    ).row(0, named=True)
    return {k: int(v or 0) for k, v in sums.items()}


def wechat_summary(sums: dict[str, int]) -> list[str]:
    yuan = _yuan_text
    figures = [
        str(sums["n"]), yuan(sums["settle"]), yuan(sums["refund"]), "0.00",
        yuan(sums["fee"]) + "000", yuan(sums["settle"]), yuan(sums["refund"]),
    ]  # fmt: skip
    return [WECHAT_SUMMARY, ",".join("`" + v for v in figures)]


# Non-ASCII constants of Alipay lines: rendered as ASCII tokens, swapped for GBK bytes.
_GBK_TOKENS = {
    "\x01": "交易",
    "\x02": "退款",
    "\x03": "测试商品",
    "\x04": "测试门店",
    "\x05": "*津水(602***@qq.com)",
}


def alipay_lines(bill: pl.DataFrame) -> pl.Series:
    """Data lines of the 业务明细 (25 columns; many values end with a TAB, as Alipay writes)."""
    refund = pl.col("refund")
    amount = _yuan(pl.when(refund).then(-pl.col("fen")).otherwise(pl.col("fen")))
    fee = _yuan(pl.when(refund).then(pl.col("fee")).otherwise(-pl.col("fee")))
    created = pl.max_horizontal(pl.col("seconds") - 5, pl.lit(0))
    day = pl.col("local_time").str.slice(0, 11)
    tab = pl.lit("\t")
    values = [
        pl.concat_str(pl.col("txn_id"), tab), pl.concat_str(pl.col("order_id"), tab),
        pl.when(refund).then(pl.lit("\x02\t")).otherwise(pl.lit("\x01\t")), pl.lit("\x03"),
        pl.concat_str(day, _clock(created)), pl.col("local_time"), pl.lit("store01\t"),
        pl.lit("\x04\t"), pl.lit("op\t"), tab, pl.lit("\x05\t"), amount, amount,
        pl.lit("0.00"), pl.lit("0.00"), pl.lit("0.00"), pl.lit("0.00"), pl.lit("0.00"),
        pl.lit(""), pl.lit("0.00\t"), pl.lit("0.00"),
        pl.concat_str(pl.col("refund_id"), tab), fee, pl.lit("0.00"), pl.lit(""),
    ]  # fmt: skip
    return bill.select(pl.concat_str(values, separator=",").alias("line")).to_series()


def alipay_preamble(day: dt.date, account: str = "20880211096256330156") -> list[str]:
    d1 = day + dt.timedelta(days=1)
    return [
        "#支付宝业务明细查询",
        f"#账号：[{account}]",
        f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{d1:%Y年%m月%d日} 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ALIPAY_HEADER,
    ]


def alipay_sums(bill: pl.DataFrame) -> dict[str, int]:
    """The footer's figures of these bill rows (they add up across slices)."""
    sums = bill.select(
        (~pl.col("refund")).sum().alias("pays"),
        pl.col("refund").sum().alias("refunds"),
        pl.col("fen").filter(~pl.col("refund")).sum().alias("pay_sum"),
        pl.col("fen").filter(pl.col("refund")).sum().alias("ref_sum"),
    ).row(0, named=True)
    return {k: int(v or 0) for k, v in sums.items()}


def alipay_footer(sums: dict[str, int], day: dt.date) -> list[str]:
    yuan = _yuan_text
    d1 = day + dt.timedelta(days=1)
    return [
        "#-----------------------------------------业务明细列表结束------------------------------------",
        f"#交易合计：{sums['pays']}笔，商家实收共{yuan(sums['pay_sum'])}元，商家优惠共0.00元",
        f"#退款合计：{sums['refunds']}笔，商家实收退款共{yuan(-sums['ref_sum'])}元，商家优惠退款共0.00元",
        f"#导出时间：[{d1:%Y年%m月%d日} 05:46:49]",
    ]


def ledger(t: pl.DataFrame, channel: str, day: dt.date, seed: int = 7) -> pl.DataFrame:
    """The ledger export (README contract), in a shuffled order."""
    r = pl.col("_r")
    fen = pl.when(r == AMOUNT_MISMATCH).then(pl.col("fen") + 1).otherwise(pl.col("fen"))
    status = (
        pl.when(r == STATUS_MISMATCH)
        .then(pl.lit("FAILED"))
        .when(r == UNSETTLED)
        .then(pl.lit("CLOSED"))
        .otherwise(pl.lit("SUCCESS"))
    )
    # A third of the rows in UTC (Z): the business day must come from the offset.
    utc = pl.col("i") % 3 == 0
    local_iso = pl.concat_str(pl.lit(f"{day:%Y-%m-%d}T"), _clock(pl.col("seconds")))
    utc_seconds = pl.col("seconds") - 8 * 3600
    prev = day - dt.timedelta(days=1)
    utc_iso = pl.concat_str(
        pl.when(utc_seconds < 0).then(pl.lit(f"{prev:%Y-%m-%d}T")).otherwise(pl.lit(f"{day}T")),
        _clock(utc_seconds % 86_400),
        pl.lit("Z"),
    )
    rows = _in_ledger(t).select(
        pl.col("order_id").alias("merchant_order_id"),
        pl.col("refund_id").alias("merchant_refund_id"),
        pl.when(pl.col("refund"))
        .then(pl.lit("refund"))
        .otherwise(pl.lit("payment"))
        .alias("txn_type"),
        pl.lit(channel).alias("channel"),
        pl.when(pl.col("i") % 20 == 3)  # unknown: not compared
        .then(pl.lit(""))
        .otherwise(pl.col("txn_id"))
        .alias("channel_txn_id"),
        _yuan(fen).alias("amount"),
        pl.lit("CNY").alias("currency"),
        status.alias("status"),
        pl.when(utc)
        .then(utc_iso)
        .otherwise(pl.concat_str(local_iso, pl.lit("+08:00")))
        .alias("created_at"),
    )
    assert rows.columns == LEDGER_HEADER
    return rows.sample(fraction=1.0, shuffle=True, seed=seed)


def expected(t: pl.DataFrame) -> dict[str, int]:
    """Rows per outcome recon must report, and field mismatches per field."""
    r = t.get_column("_r")

    def n(code: int) -> int:
        return int((r == code).sum())

    bill_rows = _in_bill(t).height
    ledger_rows = _in_ledger(t).height
    local, channel, unsettled = n(LOCAL_MISSING), n(CHANNEL_MISSING), n(UNSETTLED)
    return {
        "bill_rows": bill_rows,
        "ledger_rows": ledger_rows,
        "matched": bill_rows - local,
        "local_missing": local,
        "channel_missing": channel,
        "ledger_unsettled": unsettled,
        "field_mismatch_amount": n(AMOUNT_MISMATCH),
        "field_mismatch_status": n(STATUS_MISMATCH),
    }


def _open(path: Path, compress: bool) -> gzip.GzipFile | io.BufferedWriter:
    if compress:
        return gzip.open(path, "wb", compresslevel=1)
    return path.open("wb")


def _write_lines(
    out: gzip.GzipFile | io.BufferedWriter,
    lines: pl.Series,
    encode: str,
    tokens: dict[str, str] | None = None,
) -> None:
    """Write lines with CRLF endings, in slices so the text never exists whole."""
    swaps = {k.encode(): v.encode(encode) for k, v in (tokens or {}).items()}
    for start in range(0, lines.len(), CHUNK_ROWS):
        part = lines.slice(start, CHUNK_ROWS)
        text = part.str.join("\r\n").item()
        data = (text + "\r\n").encode("ascii" if swaps else encode)
        for token, gbk in swaps.items():
            data = data.replace(token, gbk)
        out.write(data)


def _slices(rows: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + SLICE_ROWS, rows)) for lo in range(0, max(rows, 1), SLICE_ROWS)]


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def write_day(
    rows: int, channel: str, out: Path, *, day: dt.date, seed: int = 7, compress: bool = False
) -> dict[str, Path]:
    """Write the bill, the ledger and the answer, ``SLICE_ROWS`` transactions at a time.

    The bill lists the slices in order. The ledger lists them in a shuffled order, each
    slice's rows shuffled, so an export is not in bill order at any size; a day of one
    slice comes out as one shuffle of the whole."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    out.mkdir(parents=True, exist_ok=True)
    slices = _slices(rows)
    gz = ".gz" if compress else ""
    sums: dict[str, int] = {}
    answer: dict[str, int] = {}
    if channel == "wechatpay":
        bill_path = out / f"wechatpay_{day:%Y%m%d}_ALL.csv{gz}"
        with _open(bill_path, compress) as f:
            f.write((WECHAT_HEADER + "\r\n").encode())
            for lo, hi in slices:
                t = truth(rows, channel, day, seed, lo, hi)
                bill = _in_bill(t)
                _write_lines(f, wechat_lines(bill), "utf-8")
                _add(sums, wechat_sums(bill))
                _add(answer, expected(t))
            f.write(("\r\n".join(wechat_summary(sums)) + "\r\n").encode())
    else:
        bill_path = out / f"alipay_{day:%Y%m%d}.csv{gz}"
        with _open(bill_path, compress) as f:
            f.write(("\r\n".join(alipay_preamble(day)) + "\r\n").encode("gbk"))
            for lo, hi in slices:
                t = truth(rows, channel, day, seed, lo, hi)
                bill = _in_bill(t)
                _write_lines(f, alipay_lines(bill), "gbk", _GBK_TOKENS)
                _add(sums, alipay_sums(bill))
                _add(answer, expected(t))
            f.write(("\r\n".join(alipay_footer(sums, day)) + "\r\n").encode("gbk"))
    ledger_path = out / f"ledger_{day:%Y%m%d}.csv"
    order = list(range(len(slices)))
    random.Random(seed).shuffle(order)
    with ledger_path.open("wb") as f:
        for k, s in enumerate(order):
            lo, hi = slices[s]
            part = ledger(truth(rows, channel, day, seed, lo, hi), channel, day, seed + k)
            part.write_csv(f, include_header=k == 0)
    expected_path = out / "expected.json"
    whole = {"channel": channel, "date": day.isoformat(), "rows": rows, **answer}
    expected_path.write_text(json.dumps(whole, indent=2) + "\n")
    return {"bill": bill_path, "ledger": ledger_path, "expected": expected_path}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True, help="transactions in the day")
    ap.add_argument("--channel", choices=CHANNELS, default="wechatpay")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2024, 3, 1))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--gzip", action="store_true", help="gzip the bill (.csv.gz)")
    a = ap.parse_args(argv)
    started = time.perf_counter()
    paths = write_day(a.rows, a.channel, a.out, day=a.date, seed=a.seed, compress=a.gzip)
    took = time.perf_counter() - started
    for name, p in paths.items():
        print(f"{name}: {p} ({p.stat().st_size / 1e6:.1f} MB)")
    print(f"generated {a.rows} rows in {took:.1f} s")


if __name__ == "__main__":
    main()
