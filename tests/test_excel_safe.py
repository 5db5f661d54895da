"""recon.excel_safe: CSV cells that Excel would evaluate are written as text."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.excel_safe import neutralise, neutralise_frame
from recon.outputs import write_frame

RISKY = [
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
    "=1",
    "-",
    "+",
    "@",
    '=HYPERLINK("http://x")',
    "+ 1",
]
SAFE = [
    "-0.01",
    "12.50",
    "abc",
    "",
    "0",
    "-12",
    "+12.50",
    "1+1",
    "a=b",
    "'=1",
    "2024-03-01",
    "12.5E3",
]


def neutralised(values: list[str | None]) -> list[str | None]:
    df = pl.DataFrame({"v": values}, schema={"v": pl.String})
    out: list[str | None] = df.select(neutralise(pl.col("v")).alias("out"))["out"].to_list()
    return out


@pytest.mark.parametrize("value", RISKY)
def test_formula_like_cells_get_a_leading_quote(value: str) -> None:
    assert neutralised([value]) == ["'" + value]


@pytest.mark.parametrize("value", SAFE)
def test_plain_numbers_and_text_are_unchanged(value: str) -> None:
    assert neutralised([value]) == [value]


def test_null_stays_null() -> None:
    assert neutralised([None, "=1"]) == [None, "'=1"]


def test_only_string_columns_are_touched() -> None:
    df = pl.DataFrame(
        {
            "s": ["=1", "ok"],
            "n": [-5, 3],
            "d": [dt.date(2024, 3, 1)] * 2,
        }
    )
    out = neutralise_frame(df)
    assert out.schema == df.schema
    assert out["s"].to_list() == ["'=1", "ok"]
    assert out["n"].to_list() == [-5, 3]
    assert out["d"].to_list() == df["d"].to_list()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("=+-@\t\r0123456789.,aZ |!'()"), max_size=12))
def test_after_neutralising_no_cell_starts_a_formula(value: str) -> None:
    [out] = neutralised([value])
    assert out is not None
    is_plain_number = out == value and value[:1] in "+-" and value[1:].replace(".", "", 1).isdigit()
    assert out[:1] not in ("=", "+", "-", "@", "\t", "\r") or is_plain_number
    assert out.removeprefix("'") == value or out == value  # only ever one quote added


def test_written_queue_csv_is_neutralised_but_parquet_keeps_the_raw_value(tmp_path: Path) -> None:
    values = [*RISKY, *SAFE]
    df = pl.DataFrame(
        {
            "merchant_order_id": values,
            "amount": ["-0.01"] * len(values),
            "amount_minor": list(range(-len(values), 0)),
        }
    )
    write_frame(df, tmp_path / "local_missing")
    with (tmp_path / "local_missing.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["merchant_order_id"] for r in rows] == ["'" + v for v in RISKY] + SAFE
    assert {r["amount"] for r in rows} == {"-0.01"}
    assert [int(r["amount_minor"]) for r in rows] == list(range(-len(values), 0))
    back = pl.read_parquet(tmp_path / "local_missing.parquet")
    assert back.equals(df)
    assert not list(tmp_path.glob("*.tmp"))
