"""Conformance of AlipayBillParser over the real bills in ../shared/samples/alipay.

Goldens live in tests/golden/alipay; RECON_UPDATE_GOLDEN=1 rewrites them.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from parsers.alipay import AlipayBillParser
from parsers.base import ParseContext, ParsedBill
from recon.rules import load_rules
from tests.test_parser_alipay import alipay_zip

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "alipay"
GOLDEN = Path(__file__).resolve().parent / "golden" / "alipay"
FILES = sorted(SAMPLES.glob("*.csv")) if SAMPLES.is_dir() else []
CTX = ParseContext(
    channel="alipay",
    timezone="Asia/Shanghai",
    status_map=load_rules().channel("alipay").status_map,
)

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not FILES, reason=f"no shared Alipay samples in {SAMPLES}"),
]


def parse(path: Path) -> ParsedBill:
    return AlipayBillParser().parse(path, CTX)


def portable(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows as the golden stores them: trade_time ISO, source_file without its directory."""
    return rows.with_columns(
        pl.col("trade_time").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ"),
        pl.col("source_file").str.extract(r"([^/\\]+)$"),
    )


def sample(encoding: str) -> Path:
    return next(p for p in FILES if p.name.endswith(f".{encoding}.csv"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sample_parses_cleanly(path: Path) -> None:
    bill = parse(path)
    bill.check_conservation()
    bill.check_totals()
    assert bill.quarantine.is_empty()
    assert (bill.rows_read, bill.rows.collect().height) == (10, 10)
    figures = {t.name: t.expected for t in bill.totals}
    assert figures["交易合计 笔数"] == 6
    assert figures["交易合计 商家实收"] == Decimal("0.06")
    assert figures["退款合计 笔数"] == 4
    assert figures["退款合计 商家实收"] == Decimal("-0.04")
    assert bill.rows.collect()["txn_type"].value_counts().sort("txn_type").rows() == [
        ("payment", 6),
        ("refund", 4),
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sample_matches_golden(path: Path) -> None:
    golden = GOLDEN / f"{path.stem}.csv"
    got = portable(parse(path).rows.collect()).write_csv()
    if os.environ.get("RECON_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    if not golden.exists():
        pytest.fail(f"no golden {golden}: run with RECON_UPDATE_GOLDEN=1 and review it")
    assert got == golden.read_text(encoding="utf-8")


def test_gbk_and_utf8_copies_agree() -> None:
    gbk, utf8 = parse(sample("gbk")).rows.collect(), parse(sample("utf8")).rows.collect()
    assert gbk.drop("source_file").equals(utf8.drop("source_file"))


def test_sample_zipped_as_alipay_does(tmp_path: Path) -> None:
    src = sample("gbk")
    entry = "20880211096256330156_20190916_业务明细.csv"
    summary = "20880211096256330156_20190916_业务明细(汇总).csv"
    path = tmp_path / "20880211096256330156_20190916.csv.zip"
    path.write_bytes(
        alipay_zip({summary: "#支付宝业务汇总查询\n".encode("gbk"), entry: src.read_bytes()})
    )
    bill = parse(path)
    bill.check_totals()
    assert set(bill.rows.collect()["source_file"]) == {f"{path}!{entry}"}
    assert (
        bill.rows.collect()
        .drop("source_file")
        .equals(parse(src).rows.collect().drop("source_file"))
    )
