"""recon.sides: the side view of a bill or a ledger day, as a frame and as a DuckDB query."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl

from recon.currency import CURRENCY_EXPONENTS
from recon.parts import write_part
from recon.schema import POLARS_SCHEMA
from recon.sides import SIDE_SCHEMA, bill_side, bill_side_sql, ledger_side_sql

WHEN = dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC)


def bill(currencies: list[str]) -> pl.DataFrame:
    rows = [
        {
            "channel": "wechatpay",
            "channel_txn_id": f"T{i}",
            "channel_refund_id": "",
            "merchant_order_id": f"O{i}",
            "merchant_refund_id": "" if i % 2 else f"R{i}",
            "txn_type": "payment" if i % 2 else "refund",
            "amount_minor": 100 * i,
            "fee_minor": i,
            "currency": c,
            "channel_status": "SUCCESS",
            "status": "SUCCESS",
            "trade_time": WHEN,
            "business_date": WHEN.date(),
            "source_file": "bill's.csv",
            "source_line": i + 2,
        }
        for i, c in enumerate(currencies)
    ]
    return pl.DataFrame(rows, schema=POLARS_SCHEMA)


def parts(df: pl.DataFrame, folder: Path, stem: str) -> list[Path]:
    half = df.height // 2
    return [
        write_part(df.slice(0, half), folder / f"{stem}-0.parquet"),
        write_part(df.slice(half), folder / f"{stem}-1.parquet"),
    ]


def test_bill_side_sql_is_bill_side_over_the_parts(tmp_path: Path) -> None:
    # Every known currency, and an unknown one (no exponent).
    df = bill([*sorted(CURRENCY_EXPONENTS), "XXX"])
    with duckdb.connect() as con:
        got = con.sql(bill_side_sql(parts(df, tmp_path, "bill"))).pl()
    assert got.schema == pl.Schema(SIDE_SCHEMA)
    assert got.sort("origin_line").equals(bill_side(df))  # (rows in no particular order)
    assert got.filter(pl.col("currency") == "XXX")["exponent"].to_list() == [None]
    assert dict(zip(got["currency"], got["exponent"], strict=True)) == CURRENCY_EXPONENTS | {
        "XXX": None
    }


def test_ledger_side_sql_is_the_side_columns_of_the_parts(tmp_path: Path) -> None:
    side = bill_side(bill(["CNY", "JPY", "KWD"]))
    rows = side.with_columns(created_at=pl.lit(WHEN))
    with duckdb.connect() as con:
        got = con.sql(ledger_side_sql(parts(rows, tmp_path, "ledger"))).pl()
    assert got.schema == pl.Schema(SIDE_SCHEMA)
    assert got.sort("origin_line").equals(side)


def test_empty_parts_give_an_empty_side(tmp_path: Path) -> None:
    empty = bill([])
    with duckdb.connect() as con:
        got = con.sql(bill_side_sql([write_part(empty, tmp_path / "b.parquet")])).pl()
    assert got.schema == pl.Schema(SIDE_SCHEMA)
    assert got.height == 0
