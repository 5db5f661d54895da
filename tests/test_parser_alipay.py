"""AlipayBillParser on small fixtures: encodings, containers, mapping, quarantine, totals."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import zipfile
from pathlib import Path

import polars as pl
import pytest

from parsers import get_parser
from parsers.alipay import AlipayBillParser
from parsers.base import ParseContext, ParsedBill
from recon.errors import ControlTotalsError, InputError
from recon.rules import load_rules
from recon.schema import POLARS_SCHEMA, QUARANTINE_SCHEMA

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "alipay"
CTX = ParseContext(
    channel="alipay",
    timezone="Asia/Shanghai",
    status_map=load_rules().channel("alipay").status_map,
)
HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
    "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,"
    "券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)
COLUMNS = HEADER.split(",")
PREAMBLE = [
    "#支付宝业务明细查询",
    "#账号：[20880000000000000000]",
    "#起始日期：[2024年03月01日 00:00:00]   终止日期：[2024年03月02日 00:00:00]",
    "#-----------------------------------------业务明细列表----------------------------------------",
]
END = (
    "#-----------------------------------------业务明细列表结束------------------------------------"
)
FIRST_DATA_LINE = len(PREAMBLE) + 2


def parse(path: Path) -> ParsedBill:
    return AlipayBillParser().parse(path, CTX)


def row(**values: str) -> str:
    """A data line; keys are bill column names with （元） and /请求号 left off."""
    full = {c: "" for c in COLUMNS}
    full |= {"支付宝交易号": "2024030122001400000000000099\t", "商户订单号": "M99\t"}
    full |= {"业务类型": "交易\t", "完成时间": "2024-03-01 12:00:00"}
    full |= {"订单金额（元）": "1.00", "商家实收（元）": "1.00", "商家优惠（元）": "0.00"}
    for key, value in values.items():
        name = next(c for c in COLUMNS if c.split("（")[0].split("/")[0] == key)
        full[name] = value
    return ",".join(full.values())


def footer(
    payments: int = 1, received: str = "1.00", refunds: int = 0, back: str = "0.00"
) -> list[str]:
    return [
        END,
        f"#交易合计：{payments}笔，商家实收共{received}元，商家优惠共0.00元",
        f"#退款合计：{refunds}笔，商家实收退款共{back}元，商家优惠退款共0.00元",
        "#导出时间：[2024年03月02日 05:46:49]",
    ]


def write_bill(
    tmp_path: Path, rows: list[str], tail: list[str] | None = None, header: str = HEADER
) -> Path:
    path = tmp_path / "bill.csv"
    lines = [*PREAMBLE, header, *rows, *(footer() if tail is None else tail)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _GbkName(zipfile.ZipInfo):
    """An entry named in GBK bytes without the UTF-8 flag (bit 11), as Alipay writes them."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # noqa: N802 (CPython's name)
        return self.filename.encode("gbk"), self.flag_bits


def alipay_zip(entries: dict[str, bytes], *, zip64: bool = False) -> bytes:
    """With ``zip64``, every entry carries Zip64 records, as one past 4 GiB must (a big
    merchant's detail CSV is)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            info = _GbkName(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=zip64) as out:
                out.write(data)
    return buf.getvalue()


DETAIL_ENTRY = "20880000000000000000_20240301_业务明细.csv"
SUMMARY_ENTRY = "20880000000000000000_20240301_业务明细(汇总).csv"
SUMMARY_CSV = "#支付宝业务汇总查询\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）\n合计,,3,2,150.01\n"


def without_source(bill: ParsedBill) -> pl.DataFrame:
    return bill.rows.collect().drop("source_file")


# --- the standard bill ------------------------------------------------------------------------


def test_registered_under_rules_name() -> None:
    assert isinstance(get_parser(load_rules().channel("alipay").parser), AlipayBillParser)


def test_utf8_bill_maps_payments_and_refunds() -> None:
    path = FIXTURES / "detail.utf8.csv"
    bill = parse(path)
    bill.check_conservation()
    bill.check_totals()
    assert bill.rows.collect().schema == pl.Schema(POLARS_SCHEMA)
    assert bill.quarantine.is_empty()
    assert (bill.rows_read, bill.summary_line, bill.layout) == (5, 12, "alipay_detail")
    got = (
        bill.rows.collect()
        .select("txn_type", "merchant_order_id", "merchant_refund_id", "amount_minor", "fee_minor")
        .rows()
    )
    assert got == [
        ("payment", "000123", "", 10000, 60),
        ("payment", "000124", "", 5000, 27),
        ("refund", "000123", "0000RF001", 3000, -18),  # fee returned on refund
        ("refund", "000123", "0000RF002", 2000, -12),
        ("payment", "0000000125", "", 1, 0),  # empty 服务费
    ]
    first = bill.rows.collect().row(0, named=True)
    assert first["channel_txn_id"] == "2024030122001400000000000001"  # TAB stripped
    assert bill.rows.collect()["channel_txn_id"][4] == "0024030122001400000000000003"  # zeros kept
    assert set(bill.rows.collect()["channel_refund_id"]) == {""}
    assert set(bill.rows.collect()["channel"]) == {"alipay"}
    assert set(bill.rows.collect()["currency"]) == {"CNY"}
    assert bill.rows.collect()["channel_status"].to_list() == [
        "交易",
        "交易",
        "退款",
        "退款",
        "交易",
    ]
    assert set(bill.rows.collect()["status"]) == {"SUCCESS"}
    assert bill.rows.collect()["source_line"].to_list() == list(range(6, 11))
    assert set(bill.rows.collect()["source_file"]) == {str(path)}


def test_trade_time_is_utc_and_business_date_local() -> None:
    rows = parse(FIXTURES / "detail.utf8.csv").rows.collect()
    utc = dt.UTC
    # 2024-03-02 01:30 in Shanghai is still 2024-03-01 in UTC.
    assert rows["trade_time"][1] == dt.datetime(2024, 3, 1, 17, 30, tzinfo=utc)
    assert rows["business_date"][1] == dt.date(2024, 3, 2)
    assert rows["trade_time"][3] == dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=utc)
    assert rows["business_date"][3] == dt.date(2024, 3, 1)


def test_gbk_crlf_bill_equals_utf8_bill() -> None:
    gbk = parse(FIXTURES / "detail.gbk.csv")
    gbk.check_totals()
    assert without_source(gbk).equals(without_source(parse(FIXTURES / "detail.utf8.csv")))


def test_gzipped_bill(tmp_path: Path) -> None:
    path = tmp_path / "detail.csv.gz"
    path.write_bytes(gzip.compress((FIXTURES / "detail.gbk.csv").read_bytes()))
    bill = parse(path)
    bill.check_totals()
    assert without_source(bill).equals(without_source(parse(FIXTURES / "detail.gbk.csv")))
    assert set(bill.rows.collect()["source_file"]) == {str(path)}


def test_excel_resaved_times(tmp_path: Path) -> None:
    times = ["2024/03/02 01:30:00", "2024/3/2 1:30", "2024-03-02 01:30:00"]
    bill = parse(write_bill(tmp_path, [row(完成时间=t) for t in times], footer(3, "3.00")))
    assert bill.quarantine.is_empty()
    assert set(bill.rows.collect()["trade_time"]) == {
        dt.datetime(2024, 3, 1, 17, 30, tzinfo=dt.UTC)
    }


def test_columns_found_by_name(tmp_path: Path) -> None:
    cols = [*reversed(COLUMNS), "新增列"]
    line = dict(zip(COLUMNS, row(商户订单号="R1").split(","), strict=True))
    data = ",".join([*(line[c] for c in reversed(COLUMNS)), "x"])
    bill = parse(write_bill(tmp_path, [data], header=",".join(cols)))
    bill.check_totals()
    assert bill.rows.collect().select("merchant_order_id", "amount_minor").rows() == [("R1", 100)]


def test_quoted_fields_tolerated(tmp_path: Path) -> None:
    bill = parse(write_bill(tmp_path, [row(商户订单号='"00M1"\t', 商品名称='"A, ""B"""')]))
    bill.check_totals()
    assert bill.quarantine.is_empty()
    assert bill.rows.collect()["merchant_order_id"].to_list() == ["00M1"]


def test_empty_bill(tmp_path: Path) -> None:
    bill = parse(write_bill(tmp_path, [], footer(0, "0.00")))
    bill.check_totals()
    bill.check_conservation()
    assert (bill.rows_read, bill.rows.collect().height) == (0, 0)


# --- zip as downloaded ------------------------------------------------------------------------


def test_zip_with_gbk_entry_names(tmp_path: Path) -> None:
    detail = (FIXTURES / "detail.gbk.csv").read_bytes()
    summary = SUMMARY_CSV.encode("gbk")
    path = tmp_path / "20880000000000000000_20240301.csv.zip"
    path.write_bytes(alipay_zip({SUMMARY_ENTRY: summary, DETAIL_ENTRY: detail}))
    with zipfile.ZipFile(path) as zf:  # the fixture is realistic: GBK bytes, no flag
        assert not any(i.flag_bits & 0x800 for i in zf.infolist())
        assert zf.namelist()[1] == DETAIL_ENTRY.encode("gbk").decode("cp437")
    bill = parse(path)
    bill.check_totals()
    assert set(bill.rows.collect()["source_file"]) == {f"{path}!{DETAIL_ENTRY}"}
    assert without_source(bill).equals(without_source(parse(FIXTURES / "detail.gbk.csv")))


def test_zip64_archive_as_a_big_day_comes(tmp_path: Path) -> None:
    detail = (FIXTURES / "detail.gbk.csv").read_bytes()
    path = tmp_path / "20880000000000000000_20240301.csv.zip"
    path.write_bytes(
        alipay_zip({SUMMARY_ENTRY: SUMMARY_CSV.encode("gbk"), DETAIL_ENTRY: detail}, zip64=True)
    )
    with zipfile.ZipFile(path) as zf:  # Zip64 extra field (0x0001) in each local header
        info = zf.getinfo(DETAIL_ENTRY.encode("gbk").decode("cp437"))
        assert info.extract_version >= zipfile.ZIP64_VERSION
    bill = parse(path)
    bill.check_totals()
    bill.check_conservation()
    assert without_source(bill).equals(without_source(parse(FIXTURES / "detail.gbk.csv")))


def test_zip_with_a_single_csv(tmp_path: Path) -> None:
    path = tmp_path / "bill.zip"
    path.write_bytes(alipay_zip({"export.csv": (FIXTURES / "detail.gbk.csv").read_bytes()}))
    assert parse(path).rows.collect().height == 5


@pytest.mark.parametrize(
    "entries",
    [
        {SUMMARY_ENTRY: "x", "a.csv": "x"},
        {DETAIL_ENTRY: "x", f"old/{DETAIL_ENTRY}": "x"},
        {"readme.txt": "x"},
    ],
)
def test_zip_without_detail_entry(tmp_path: Path, entries: dict[str, str]) -> None:
    path = tmp_path / "bill.zip"
    path.write_bytes(alipay_zip({k: v.encode() for k, v in entries.items()}))
    with pytest.raises(InputError, match="no single 业务明细 CSV") as err:
        parse(path)
    assert err.value.path == path


def test_zip_with_only_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "bill.zip"
    path.write_bytes(alipay_zip({SUMMARY_ENTRY: SUMMARY_CSV.encode("gbk")}))
    with pytest.raises(InputError, match="unknown Alipay bill layout") as err:
        parse(path)
    assert err.value.path == f"{path}!{SUMMARY_ENTRY}"


def test_corrupt_zip(tmp_path: Path) -> None:
    path = tmp_path / "bill.zip"
    good = alipay_zip({DETAIL_ENTRY: (FIXTURES / "detail.gbk.csv").read_bytes()})
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="corrupt zip") as err:
        parse(path)
    assert err.value.path == path


# --- quarantine -------------------------------------------------------------------------------


def test_bad_rows_quarantined_with_line_and_column() -> None:
    bill = parse(FIXTURES / "bad_rows.csv")
    bill.check_conservation()
    bill.check_totals()  # quarantined rows still count in the bill's totals
    assert bill.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert bill.rows.collect()["merchant_order_id"].to_list() == ["B001"]
    got = bill.quarantine.select("source_line", "column", "reason").rows()
    assert got == [
        (7, "订单金额（元）", 'not an amount: "12.3x"'),
        (8, "完成时间", 'not a time: "2024-02-30 10:00:05"'),
        (9, "业务类型", "unsupported 业务类型 转账"),
        (10, "订单金额（元）", 'wrong sign for 退款: "5.00"'),
        (11, "服务费（元）", 'not an amount: "abc"'),
        (12, "订单金额（元）", 'not an amount: "3.005"'),  # fen cannot hold it
    ]
    lines = (FIXTURES / "bad_rows.csv").read_text(encoding="utf-8").splitlines()
    assert bill.quarantine["raw"].to_list() == lines[6:12]
    assert set(bill.quarantine["source_file"]) == {str(FIXTURES / "bad_rows.csv")}


def test_negative_payment_quarantined(tmp_path: Path) -> None:
    bill = parse(write_bill(tmp_path, [row(订单金额="-1.00")]))
    assert bill.quarantine.select("column", "reason").rows() == [
        ("订单金额（元）", 'wrong sign for 交易: "-1.00"')
    ]


def test_empty_ids_quarantined(tmp_path: Path) -> None:
    bill = parse(
        write_bill(tmp_path, [row(支付宝交易号="\t"), row(商户订单号=" \t")], footer(2, "2.00"))
    )
    bill.check_totals()
    assert bill.quarantine.select("column", "reason").rows() == [
        ("支付宝交易号", "empty 支付宝交易号"),
        ("商户订单号", "empty 商户订单号"),
    ]


def test_wrong_field_counts_quarantined_and_bill_fails_totals(tmp_path: Path) -> None:
    rows = [row(), row(商品名称="A,B"), ",".join(row().split(",")[:-2])]
    bill = parse(write_bill(tmp_path, rows, footer(3, "3.00")))
    bill.check_conservation()
    n = len(COLUMNS)
    assert bill.quarantine.select("source_line", "column", "reason").rows() == [
        (FIRST_DATA_LINE + 1, "(row)", f"expected {n} fields as in the column header, found {n + 1} (a comma inside 商品名称 or 备注?)"),
        (FIRST_DATA_LINE + 2, "(row)", f"expected {n} fields as in the column header, found {n - 2}"),
    ]  # fmt: skip
    # Their amounts cannot be located, so the bill's totals cannot be proven: rejected.
    with pytest.raises(ControlTotalsError, match="交易合计 笔数: bill says 3, rows sum to 1"):
        bill.check_totals()


def test_malformed_quotes_quarantined(tmp_path: Path) -> None:
    bill = parse(write_bill(tmp_path, [row(商品名称='"A"B')]))
    assert bill.quarantine.select("column", "reason").rows() == [
        ("(row)", "malformed double quotes")
    ]


# --- control totals and layout errors ---------------------------------------------------------


def test_footer_disagreeing_rejects_bill(tmp_path: Path) -> None:
    text = (FIXTURES / "detail.utf8.csv").read_text(encoding="utf-8-sig")
    path = tmp_path / "bill.csv"
    path.write_text(text.replace("商家实收共145.01元", "商家实收共145.02元"), encoding="utf-8")
    bill = parse(path)
    with pytest.raises(ControlTotalsError) as err:
        bill.check_totals()
    assert "交易合计 商家实收: bill says 145.02, rows sum to 145.01" in str(err.value)
    assert err.value.line == 12
    assert [t.name for t in bill.totals if not t.ok] == ["交易合计 商家实收"]


def test_refund_totals_checked(tmp_path: Path) -> None:
    rows = [row(), row(业务类型="退款\t", 订单金额="-0.40", 商家实收="-0.40", 退款批次号="RF1")]
    bill = parse(write_bill(tmp_path, rows, footer(1, "1.00", 1, "-0.50")))
    with pytest.raises(ControlTotalsError) as err:
        bill.check_totals()
    assert "退款合计 商家实收: bill says -0.50, rows sum to -0.40" in str(err.value)


def test_truncated_bill_without_footer(tmp_path: Path) -> None:
    lines = (FIXTURES / "detail.utf8.csv").read_text(encoding="utf-8-sig").splitlines()
    path = tmp_path / "bill.csv"
    path.write_text("\n".join(lines[:8]), encoding="utf-8")
    with pytest.raises(InputError, match="no footer totals"):
        parse(path)


def test_unrecognised_footer(tmp_path: Path) -> None:
    path = write_bill(tmp_path, [row()], [END, "#交易合计：1笔", "#退款合计：0笔"])
    with pytest.raises(InputError, match="unrecognised footer totals") as err:
        parse(path)
    assert err.value.line == FIRST_DATA_LINE + 2


def test_footer_not_required_when_totals_unchecked(tmp_path: Path) -> None:
    ctx = ParseContext(channel="alipay", timezone="Asia/Shanghai", check_totals=False)
    bill = AlipayBillParser().parse(write_bill(tmp_path, [row()], []), ctx)
    assert (bill.rows.collect().height, bill.totals) == (1, [])


@pytest.mark.parametrize(
    "text",
    [
        "#支付宝账务明细查询\n账务流水号,业务流水号,商户订单号,商品名称,发生时间\n1,2,3,4,5\n",
        "#支付宝业务明细查询\n#导出时间：[2024年03月02日 05:46:49]\n",
        "",
    ],
)
def test_unknown_layout(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bill.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="unknown Alipay bill layout"):
        parse(path)


def test_missing_required_column(tmp_path: Path) -> None:
    header = HEADER.replace(",服务费（元）", "")
    with pytest.raises(InputError, match="required column missing") as err:
        parse(write_bill(tmp_path, [], header=header))
    assert (err.value.line, err.value.column) == (len(PREAMBLE) + 1, "服务费（元）")
