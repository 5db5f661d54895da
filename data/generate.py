"""Generate a channel-day of real-format bills plus the matching ledger export.

Breaks are injected on purpose and returned as the expected answer, so tests can
check that every break lands in its queue and nothing else does. The traps are
ordinary facts of the domain: ledger times in UTC and other offsets around local
midnight, ids with leading zeros or that look like numbers, amounts written as
12.5 / 12.50 / 012.50, partial refunds, other channels and neighbouring days in
the same ledger file, and ledger rows that never reach a bill (CLOSED orders).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
Key = tuple[str, str, str]  # (txn_type, merchant_order_id, merchant_refund_id)

WECHAT_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
    "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
WECHAT_SUMMARY = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
ALIPAY_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)
LEDGER_HEADER = [
    "merchant_order_id", "merchant_refund_id", "txn_type", "channel", "channel_txn_id",
    "amount", "currency", "status", "created_at",
]  # fmt: skip


@dataclass
class Txn:
    channel: str
    txn_type: str
    order_id: str
    refund_id: str
    txn_id: str
    refund_txn_id: str
    amount_fen: int
    time: dt.datetime  # aware, Asia/Shanghai
    status: str = "SUCCESS"
    currency: str = "CNY"

    @property
    def key(self) -> Key:
        return (self.txn_type, self.order_id, self.refund_id)


@dataclass
class Expected:
    local_missing: set[Key] = field(default_factory=set)
    channel_missing: set[Key] = field(default_factory=set)
    field_mismatch: set[tuple[Key, str]] = field(default_factory=set)


@dataclass
class Day:
    bills: dict[str, list[Txn]]
    ledger: list[dict[str, str]]
    expected: dict[str, Expected]


def _yuan(fen: int, style: int = 0) -> str:
    d = Decimal(fen).scaleb(-2)
    text = f"{d:.2f}"
    if style == 1:
        return text.rstrip("0").rstrip(".") if "." in text else text  # 12.5, 12
    if style == 2:
        return "0" + text  # 012.50
    if style == 3 and fen >= 100_000:
        return f"{d:,.2f}"  # 1,234.50
    return text


def _fee(fen: int) -> int:
    return int((Decimal(fen) * Decimal("0.006")).quantize(Decimal(1), rounding="ROUND_HALF_UP"))


def _order_id(rng: random.Random, i: int, channel: str) -> str:
    kind = i % 5
    if kind == 0:
        return f"{i:08d}"  # leading zeros
    if kind == 1:
        return str(10**17 * (1 + i % 9) + i)  # 18 digits: a float would mangle it
    if kind == 2:
        return f"{i}E{i % 10}"  # reads as a float in some tools
    return f"{channel[:2].upper()}{i:07d}"


def _txns(rng: random.Random, channel: str, day: dt.date, n: int) -> list[Txn]:
    start = dt.datetime.combine(day, dt.time(0), SHANGHAI)
    out: list[Txn] = []
    for i in range(n):
        t = start + dt.timedelta(seconds=rng.randrange(86_400))
        if i % 7 == 0:  # crowd both edges of the local day: the time-zone trap
            t = start + dt.timedelta(
                seconds=rng.choice([rng.randrange(1800), 86_400 - 1 - rng.randrange(1800)])
            )
        amount = rng.choice([1, 99, 1250, 1999, 100_000, 123_450, rng.randrange(1, 500_000)])
        oid = _order_id(rng, i, channel)
        txn_id = (
            f"42{rng.randrange(10**25):026d}"
            if channel == "wechatpay"
            else f"2024{rng.randrange(10**24):024d}"
        )
        out.append(Txn(channel, "payment", oid, "", txn_id, "", amount, t))
        if i % 11 == 0 and t.hour < 20 and amount >= 3:  # partial refunds, never more than paid
            for r in range(1 + (i % 2)):
                rt = t + dt.timedelta(minutes=30 + r)
                out.append(
                    Txn(
                        channel,
                        "refund",
                        oid,
                        f"R{oid}-{r}",
                        txn_id,
                        f"50{rng.randrange(10**26):027d}",
                        max(1, amount // 3),
                        rt,
                    )
                )
    return out


def _ledger_row(t: Txn, rng: random.Random, style: int) -> dict[str, str]:
    offset = rng.choice([dt.UTC, SHANGHAI, ZoneInfo("America/New_York")])
    created = t.time.astimezone(offset)
    text = created.isoformat()
    if offset is dt.UTC and rng.random() < 0.5:
        text = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "merchant_order_id": t.order_id,
        "merchant_refund_id": t.refund_id,
        "txn_type": t.txn_type,
        "channel": t.channel,
        "channel_txn_id": t.txn_id if rng.random() < 0.8 else "",  # empty: unknown, not a break
        "amount": _yuan(t.amount_fen, style),
        "currency": t.currency,
        "status": t.status,
        "created_at": text,
    }


def generate(day: dt.date, n: int, seed: int = 7, breaks: bool = True) -> Day:
    rng = random.Random(seed)
    bills: dict[str, list[Txn]] = {}
    ledger: list[dict[str, str]] = []
    expected: dict[str, Expected] = {}
    for channel in ("wechatpay", "alipay"):
        exp = expected.setdefault(channel, Expected())
        txns = _txns(rng, channel, day, n)
        bill = list(txns)
        for i, t in enumerate(txns):
            row = _ledger_row(t, rng, i % 4)
            if breaks and i % 97 == 5:  # 本地丢失: the ledger never recorded it
                exp.local_missing.add(t.key)
                continue
            if breaks and i % 89 == 6:  # 渠道丢失: the channel never billed it
                bill.remove(t)
                exp.channel_missing.add(t.key)
            elif breaks and i % 83 == 7:
                row["amount"] = _yuan(t.amount_fen + 1)
                exp.field_mismatch.add((t.key, "amount"))
            elif breaks and i % 79 == 8:
                row["status"] = "FAILED"
                exp.field_mismatch.add((t.key, "status"))
            elif breaks and i % 73 == 9 and t.txn_type == "payment":
                row["channel_txn_id"] = t.txn_id[:-1] + ("1" if t.txn_id[-1] != "1" else "2")
                exp.field_mismatch.add((t.key, "channel_txn_id"))
            elif breaks and i % 71 == 10:
                row["currency"] = "USD"
                exp.field_mismatch.add((t.key, "currency"))
            ledger.append(row)
        if breaks:  # the channel bills one payment twice: the second copy is ours to chase
            dup = next(
                t for t in bill if t.txn_type == "payment" and t.key not in exp.local_missing
            )
            bill.append(dup)
            exp.local_missing.add(dup.key)
        # Not breaks: a closed order the channel never bills; neighbouring days.
        closed = Txn(
            channel,
            "payment",
            f"CLOSED{channel}",
            "",
            "",
            "",
            500,
            dt.datetime.combine(day, dt.time(12), SHANGHAI),
            "CLOSED",
        )
        ledger.append(_ledger_row(closed, rng, 0))
        for delta in (-1, 1):
            other = _txns(rng, channel, day + dt.timedelta(days=delta), 5)
            ledger.extend(_ledger_row(t, rng, 0) for t in other)
        bills[channel] = sorted(bill, key=lambda t: t.time)
    rng.shuffle(ledger)
    return Day(bills=bills, ledger=ledger, expected=expected)


def wechat_bill(txns: list[Txn]) -> str:
    lines = [WECHAT_HEADER]
    tot = dict.fromkeys(("n", "settle", "refund", "fee", "order", "req"), 0)
    for t in txns:
        pay = t.txn_type == "payment"
        fee = _fee(t.amount_fen) * (1 if pay else -1)
        settle = t.amount_fen if pay else 0
        refund = 0 if pay else t.amount_fen
        vals = [
            t.time.strftime("%Y-%m-%d %H:%M:%S"), "wx2421b1c4370ec43b", "10000100", "0", "",
            t.txn_id, t.order_id, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "JSAPI",
            "SUCCESS" if pay else "REFUND", "CMB_DEBIT", "CNY", _yuan(settle), "0.00",
            "0" if pay else t.refund_txn_id, "0" if pay else t.refund_id, _yuan(refund), "0.00",
            "" if pay else "ORIGINAL", "" if pay else "SUCCESS",
            "会员卡, 年费 (12个月)", "attach,data", f"{Decimal(fee).scaleb(-2):.5f}", "0.60%",
            _yuan(settle), _yuan(refund), "",
        ]  # fmt: skip
        lines.append(",".join("`" + v for v in vals))
        tot["n"] += 1
        tot["settle"] += settle
        tot["refund"] += refund
        tot["fee"] += fee
        tot["order"] += settle
        tot["req"] += refund
    lines.append(WECHAT_SUMMARY)
    figures = [
        str(tot["n"]), _yuan(tot["settle"]), _yuan(tot["refund"]), "0.00",
        f"{Decimal(tot['fee']).scaleb(-2):.5f}", _yuan(tot["order"]), _yuan(tot["req"]),
    ]  # fmt: skip
    lines.append(",".join("`" + v for v in figures))
    return "\r\n".join(lines) + "\r\n"


def alipay_bill(txns: list[Txn], day: dt.date, account: str = "20880211096256330156") -> str:
    d0, d1 = day, day + dt.timedelta(days=1)
    lines = [
        "#支付宝业务明细查询",
        f"#账号：[{account}]",
        f"#起始日期：[{d0:%Y年%m月%d日} 00:00:00]   终止日期：[{d1:%Y年%m月%d日} 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ALIPAY_HEADER,
    ]
    pays = [t for t in txns if t.txn_type == "payment"]
    refunds = [t for t in txns if t.txn_type == "refund"]
    for t in txns:
        pay = t.txn_type == "payment"
        sign = 1 if pay else -1
        fee = -_fee(t.amount_fen) * sign
        vals = [
            t.txn_id + "\t", t.order_id + "\t", ("交易" if pay else "退款") + "\t", "测试商品",
            (t.time - dt.timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S"),
            t.time.strftime("%Y-%m-%d %H:%M:%S"), "store01\t", "测试门店\t", "op\t", "\t",
            "*津水(602***@qq.com)\t", _yuan(sign * t.amount_fen), _yuan(sign * t.amount_fen),
            "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00\t", "0.00",
            ("" if pay else t.refund_id) + "\t", _yuan(fee), "0.00", "",
        ]  # fmt: skip
        lines.append(",".join(vals))
    pay_sum = sum(t.amount_fen for t in pays)
    ref_sum = -sum(t.amount_fen for t in refunds)
    lines += [
        "#-----------------------------------------业务明细列表结束------------------------------------",
        f"#交易合计：{len(pays)}笔，商家实收共{_yuan(pay_sum)}元，商家优惠共0.00元",
        f"#退款合计：{len(refunds)}笔，商家实收退款共{_yuan(ref_sum)}元，商家优惠退款共0.00元",
        f"#导出时间：[{d1:%Y年%m月%d日} 05:46:49]",
    ]
    return "\r\n".join(lines) + "\r\n"


class _GbkZipInfo(zipfile.ZipInfo):
    """Writes the entry name as GBK bytes without the UTF-8 flag, as Alipay does."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # noqa: N802 (CPython's name)
        return self.filename.encode("gbk"), self.flag_bits


def alipay_zip(csv_text: str, day: dt.date, account: str = "20880211096256330156") -> bytes:
    """The zip Alipay serves: GBK bodies, GBK entry names without the UTF-8 flag."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for suffix, body in (("业务明细", csv_text), ("业务明细(汇总)", "#汇总\r\n")):
            name = f"{account}0156_{day:%Y%m%d}_{suffix}.csv"
            info = _GbkZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, body.encode("gbk"))
    return buf.getvalue()


def write_ledger(rows: list[dict[str, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LEDGER_HEADER)
        w.writeheader()
        w.writerows(rows)


def write_day(day: Day, business_date: dt.date, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "wechatpay": out / f"wechatpay_{business_date:%Y%m%d}_ALL.csv",
        "alipay": out / f"alipay_{business_date:%Y%m%d}.csv.zip",
        "ledger": out / f"ledger_{business_date:%Y%m%d}.csv",
    }
    paths["wechatpay"].write_bytes(wechat_bill(day.bills["wechatpay"]).encode("utf-8"))
    paths["alipay"].write_bytes(
        alipay_zip(alipay_bill(day.bills["alipay"], business_date), business_date)
    )
    write_ledger(day.ledger, paths["ledger"])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2024, 3, 1))
    ap.add_argument("--rows", type=int, default=400, help="payments per channel")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "sample")
    a = ap.parse_args()
    paths = write_day(generate(a.date, a.rows, a.seed), a.date, a.out)
    for name, p in paths.items():
        print(f"{name}: {p}")


if __name__ == "__main__":
    main()
