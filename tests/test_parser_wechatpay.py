"""WeChat Pay v2 trade bill parser, on small hand-written bills in tests/fixtures/wechatpay."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from parsers.base import ParseContext, ParsedBill
from parsers.wechatpay import WechatPayV2Parser, detect_layout, split_fields
from recon.errors import ControlTotalsError, InputError
from recon.rules import load_rules
from recon.schema import COLUMNS, POLARS_SCHEMA

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wechatpay"
CTX = ParseContext(
    channel="wechatpay",
    timezone="Asia/Shanghai",
    status_map=load_rules().channel("wechatpay").status_map,
)


def parse(name: str, ctx: ParseContext = CTX) -> ParsedBill:
    return WechatPayV2Parser().parse(FIXTURES / name, ctx)


def parse_text(tmp_path: Path, text: str) -> ParsedBill:
    path = tmp_path / "bill.csv"
    path.write_text(text, encoding="utf-8")
    return WechatPayV2Parser().parse(path, CTX)


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8-sig")


def picked(bill: ParsedBill, *columns: str) -> list[tuple[object, ...]]:
    return bill.rows.collect().select(columns).rows()


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


# --- ALL layout: payments, refunds, commas in goods names ---------------------------


def test_all_layout_maps_payments_and_refunds() -> None:
    bill = parse("all_mixed.csv")
    bill.check_conservation()
    bill.check_totals()
    assert (bill.layout, bill.rows_read, bill.summary_line) == ("ALL", 4, 8)
    assert bill.quarantine.height == 0
    assert bill.rows.collect().columns == list(COLUMNS)
    assert dict(bill.rows.collect().schema) == POLARS_SCHEMA
    assert picked(
        bill,
        "source_line",
        "txn_type",
        "channel_txn_id",
        "channel_refund_id",
        "merchant_order_id",
        "merchant_refund_id",
        "amount_minor",
        "fee_minor",
        "currency",
        "channel_status",
        "status",
    ) == [
        (2, "payment", "4200000001202403011111111111", "", "ORD-0001", "", 10000, 60, "CNY", "SUCCESS", "SUCCESS"),
        (3, "payment", "0042000002202403021234567890", "", "000123", "", 880, 5, "CNY", "SUCCESS", "SUCCESS"),
        (5, "refund", "4200000001202403011111111111", "50300000012024030100000001", "ORD-0001", "RF-0001", 3000, -18, "CNY", "SUCCESS", "SUCCESS"),
        (6, "payment", "4200000003202403010000000003", "", "ORD-0003", "", 500, 3, "CNY", "REVOKED", "REVOKED"),
    ]  # fmt: skip
    assert set(bill.rows.collect()["channel"]) == {"wechatpay"}
    assert set(bill.rows.collect()["source_file"]) == {str(FIXTURES / "all_mixed.csv")}


def test_all_layout_times_are_utc_with_local_business_date() -> None:
    bill = parse("all_mixed.csv")
    assert picked(bill, "trade_time", "business_date") == [
        (utc(2024, 3, 1, 2, 15), date(2024, 3, 1)),
        # 2024-03-02 01:30 in Shanghai is still the 1st in UTC; the business day is the 2nd
        (utc(2024, 3, 1, 17, 30), date(2024, 3, 2)),
        (utc(2024, 3, 1, 10, 20), date(2024, 3, 1)),
        (utc(2024, 3, 1, 12, 0), date(2024, 3, 1)),
    ]


def test_ids_keep_leading_zeros_and_lose_blanks() -> None:
    row = parse("all_mixed.csv").rows.collect().filter(pl.col("source_line") == 3)
    assert row["channel_txn_id"].item() == "0042000002202403021234567890"
    assert row["merchant_order_id"].item() == "000123"  # written as "  000123 "


def test_goods_name_containing_the_separator_is_rejoined() -> None:
    text = fixture_text("all_mixed.csv")
    lines = pl.DataFrame({"line": [2, 3], "text": text.splitlines()[1:3]})
    columns = detect_layout(Path("x"), text.splitlines()[0]).columns
    fields = split_fields(lines, columns)
    assert fields["商品名称"].to_list() == ["咖啡, 拿铁, 大杯", "套餐,`加量"]
    # the fields after the goods name did not shift
    assert fields["商户数据包"].to_list() == ["attach", "attach"]
    assert fields["手续费"].to_list() == ["0.60000", "0.05000"]
    assert fields["_n"].to_list() == [27, 28]


def test_empty_currency_takes_the_channel_default() -> None:
    ctx = ParseContext("wechatpay", "Asia/Shanghai", default_currency="HKD")
    bill = parse("all_mixed.csv", ctx)
    assert picked(bill, "source_line", "currency") == [
        (2, "CNY"),
        (3, "CNY"),
        (5, "CNY"),
        (6, "HKD"),
    ]


def test_status_map_translates_and_unknown_statuses_pass_through() -> None:
    ctx = ParseContext("wechatpay", "Asia/Shanghai", status_map={"SUCCESS": "OK"})
    bill = parse("all_mixed.csv", ctx)
    assert picked(bill, "channel_status", "status") == [
        ("SUCCESS", "OK"),
        ("SUCCESS", "OK"),
        ("SUCCESS", "OK"),
        ("REVOKED", "REVOKED"),
    ]


def test_gzip_copy_parses_like_the_plain_file() -> None:
    plain, gz = parse("all_mixed.csv"), parse("all_mixed.csv.gz")
    assert gz.rows.collect().drop("source_file").equals(plain.rows.collect().drop("source_file"))
    assert gz.totals == plain.totals
    gz.check_totals()


# --- the other layouts ---------------------------------------------------------------


def test_success_layout_takes_the_order_amount() -> None:
    bill = parse("success.csv")  # CRLF line endings
    bill.check_conservation()
    bill.check_totals()
    assert bill.layout == "SUCCESS"
    # 订单金额 20.90, not 应结订单金额 19.90 (a 1.00 coupon)
    assert picked(bill, "merchant_order_id", "txn_type", "amount_minor", "fee_minor") == [
        ("S-1", "payment", 2090, 12),
        ("S-2", "payment", 1, 0),
    ]
    totals = {t.name: t.actual for t in bill.totals}
    assert totals["订单总金额"] == Decimal("20.91")
    assert totals["退款总金额"] == 0  # no refund column: the bill's 0.00 is checked against zero


def test_success_layout_quarantines_a_refund_row(tmp_path: Path) -> None:
    text = fixture_text("success.csv").replace("`JSAPI,`SUCCESS", "`JSAPI,`REFUND", 1)
    bill = parse_text(tmp_path, text)
    assert bill.quarantine.select("source_line", "column").rows() == [(2, "交易状态")]
    assert bill.rows.collect()["merchant_order_id"].to_list() == ["S-2"]


def test_refund_layout_uses_refund_success_time_when_present() -> None:
    bill = parse("refund.csv")
    bill.check_conservation()
    bill.check_totals()
    assert bill.layout == "REFUND"
    assert picked(
        bill,
        "txn_type",
        "channel_refund_id",
        "merchant_refund_id",
        "amount_minor",
        "fee_minor",
        "channel_status",
        "trade_time",
    ) == [
        ("refund", "50300000202403060000000001", "R-1", 1200, -7, "SUCCESS", utc(2024, 3, 6, 2, 0, 5)),
        # 退款成功时间 empty (still processing): 交易时间
        ("refund", "50300000202403060000000002", "R-2", 350, -2, "PROCESSING", utc(2024, 3, 6, 3, 0)),
    ]  # fmt: skip


def test_legacy_layout_with_full_width_colons() -> None:
    bill = parse("legacy.csv")
    bill.check_conservation()
    bill.check_totals()
    assert bill.layout == "LEGACY_ALL"
    assert picked(bill, "txn_type", "merchant_refund_id", "amount_minor", "fee_minor", "trade_time") == [
        ("payment", "", 2500, 15, utc(2015, 6, 1, 4, 0)),
        ("refund", "LR-1", 500, -3, utc(2015, 6, 1, 7, 30)),
    ]  # fmt: skip
    assert [t.name for t in bill.totals] == [
        "总交易单数",
        "总交易额",
        "总退款金额",
        "总代金券或立减优惠退款金额",
        "手续费总金额",
    ]


# --- bills that must be rejected -----------------------------------------------------


def test_summary_disagreeing_with_rows_raises_with_both_figures() -> None:
    bill = parse("bad_totals.csv")
    bill.check_conservation()
    with pytest.raises(ControlTotalsError) as err:
        bill.check_totals()
    message = str(err.value)
    assert "总交易单数: bill says 3, rows sum to 2" in message
    assert "应结订单总金额: bill says 19.92, rows sum to 19.91" in message
    assert "订单总金额" not in message.replace("应结订单总金额", "")  # that one agrees
    assert err.value.line == 5


def test_bill_without_summary_is_incomplete() -> None:
    with pytest.raises(InputError, match="no summary block: bill incomplete"):
        parse("truncated.csv")


def test_unknown_header_is_rejected_on_line_1() -> None:
    with pytest.raises(InputError, match="unknown WeChat Pay bill layout: 记账时间") as err:
        parse("unknown_header.csv")
    assert err.value.line == 1


def test_missing_required_column_is_named() -> None:
    with pytest.raises(InputError, match="lacks required column") as err:
        parse("missing_column.csv")
    assert (err.value.line, err.value.column) == (1, "商户订单号")


def test_duplicate_header_column_is_rejected(tmp_path: Path) -> None:
    text = fixture_text("success.csv").replace("费率备注", "费率", 1)
    with pytest.raises(InputError, match="duplicate column '费率'"):
        parse_text(tmp_path, text)


def test_summary_header_without_values_line(tmp_path: Path) -> None:
    lines = fixture_text("success.csv").splitlines()
    text = "\r\n".join(lines[:-1]) + "\r\n\r\n"  # values line lost, blank lines remain
    with pytest.raises(InputError, match="no values line") as err:
        parse_text(tmp_path, text)
    assert err.value.line == 4


def test_content_after_the_summary_is_rejected(tmp_path: Path) -> None:
    text = fixture_text("success.csv") + "\r\n`2024-03-05 09:00:00,`wx\r\n"
    with pytest.raises(InputError, match="unexpected line after the summary") as err:
        parse_text(tmp_path, text)
    assert err.value.line == 7


def test_summary_value_that_is_not_a_number(tmp_path: Path) -> None:
    text = fixture_text("success.csv").replace("`19.91", "`19.9x")
    with pytest.raises(InputError, match="not a number") as err:
        parse_text(tmp_path, text)
    assert (err.value.line, err.value.column) == (5, "应结订单总金额")


# --- rows that go to quarantine ------------------------------------------------------


def test_bad_rows_are_quarantined_with_line_column_and_value() -> None:
    bill = parse("bad_rows.csv")
    bill.check_conservation()
    assert bill.rows.collect()["source_line"].to_list() == [2]
    assert bill.quarantine.select("source_line", "column", "reason").rows() == [
        (3, "订单金额", "not an exact CNY amount: '12.345'"),
        (4, "交易时间", "not a time (%Y-%m-%d %H:%M:%S): '2024-02-30 10:02:00'"),
        (5, "商户订单号", "empty 商户订单号"),
        (6, "(row)", "20 fields where the header has 27"),
        (7, "手续费", "fee not exact in CNY minor units: '0.00500'"),
        (8, "货币种类", "unknown currency 'XXX'"),
        (9, "申请退款金额", "not an exact CNY amount: 'abc'"),
    ]
    lines = fixture_text("bad_rows.csv").splitlines()
    assert bill.quarantine["raw"].to_list() == lines[2:9]
    assert set(bill.quarantine["source_file"]) == {str(FIXTURES / "bad_rows.csv")}


def test_totals_count_quarantined_rows_too() -> None:
    bill = parse("bad_rows.csv")
    bill.check_totals()
    totals = {t.name: t.actual for t in bill.totals}
    assert totals["总交易单数"] == 8
    assert totals["订单总金额"] == Decimal("34.345")  # includes the quarantined 12.345


def test_refund_without_merchant_refund_id_is_quarantined(tmp_path: Path) -> None:
    text = fixture_text("refund.csv").replace("`R-2,", "`,")
    bill = parse_text(tmp_path, text)
    assert bill.quarantine.select("source_line", "column").rows() == [(3, "商户退款单号")]


def test_bad_refund_success_time_is_quarantined(tmp_path: Path) -> None:
    text = fixture_text("refund.csv").replace("`2024-03-06 10:00:05", "`2024-03-06 25:00:05")
    bill = parse_text(tmp_path, text)
    assert bill.quarantine.select("source_line", "column", "reason").rows() == [
        (2, "退款成功时间", "not a time (%Y-%m-%d %H:%M:%S): '2024-03-06 25:00:05'"),
    ]
