"""Conformance of the WeChat Pay parser on real bills in ../shared/samples/wechat.

Golden output lives in tests/golden/wechatpay/<stem>.csv; regenerate it after a
deliberate change with ``RECON_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_wechatpay_shared.py``
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from parsers.base import ParseContext, ParsedBill
from parsers.wechatpay import WechatPayV2Parser
from recon.errors import ControlTotalsError
from recon.rules import load_rules

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "wechat"
GOLDEN = Path(__file__).resolve().parent / "golden" / "wechatpay"
UPDATE_GOLDEN = os.environ.get("RECON_UPDATE_GOLDEN") == "1"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} not present"),
]

SAMPLE_FILES = sorted(p for p in SAMPLES.glob("*") if p.is_file()) if SAMPLES.is_dir() else []

# The summary block matches the rows kept in the file.
TOTALS_MATCH = {"WxJava_PAY_BILL_RESULT_ALL_CONTENT_1.csv"}
# Whole real bills cut down to one data row, but their summary still holds the
# totals of the original bill (see SOURCES.txt), so the control totals must fail.
CUT_DOWN = {
    "WxJava_PAY_BILL_RESULT_ALL_CONTENT.csv",
    "WxJava_PAY_BILL_RESULT_REFUND_CONTENT.csv",
    "official_wxcloudrun_doc_example_ALL.csv",
}


def parse(path: Path) -> ParsedBill:
    rules = load_rules().channel("wechatpay")
    ctx = ParseContext(channel="wechatpay", timezone="Asia/Shanghai", status_map=rules.status_map)
    return WechatPayV2Parser().parse(path, ctx)


def as_golden_csv(bill: ParsedBill) -> str:
    """The standard bill as CSV; source_file reduced to the name so goldens are portable."""
    return (
        bill.rows.collect()
        .with_columns(
            pl.col("trade_time").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z"),
            pl.lit(bill.path.name).alias("source_file"),
        )
        .write_csv()
    )


def test_every_sample_is_classified() -> None:
    assert {p.name for p in SAMPLE_FILES} == TOTALS_MATCH | CUT_DOWN


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_parses_without_quarantine(path: Path) -> None:
    bill = parse(path)
    bill.check_conservation()
    assert bill.quarantine.height == 0, bill.quarantine.rows()
    assert bill.rows.collect().height == bill.rows_read >= 1
    assert set(bill.rows.collect()["source_file"]) == {str(path)}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_matches_golden(path: Path) -> None:
    actual = as_golden_csv(parse(path))
    golden = GOLDEN / f"{path.stem}.csv"
    if UPDATE_GOLDEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.is_file(), f"no golden {golden}: run with RECON_UPDATE_GOLDEN=1 and review it"
    assert actual == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(TOTALS_MATCH))
def test_sample_totals_match(name: str) -> None:
    bill = parse(SAMPLES / name)
    bill.check_totals()
    assert "总交易单数" in {t.name for t in bill.totals}


@pytest.mark.parametrize("name", sorted(CUT_DOWN))
def test_cut_down_sample_fails_its_totals(name: str) -> None:
    bill = parse(SAMPLES / name)
    with pytest.raises(ControlTotalsError, match="总交易单数: bill says"):
        bill.check_totals()
