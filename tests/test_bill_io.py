"""recon.bill_io: a parsed bill and a ledger day handed between steps as files."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from parsers.base import TotalCheck
from recon.bill_io import load_ledger, load_parsed, save_ledger, save_parsed
from recon.errors import InputError
from recon.ledger import LEDGER_COLUMNS, LEDGER_ROW_SCHEMA, load_ledger_day
from recon.schema import POLARS_SCHEMA, QUARANTINE_SCHEMA
from tests.frames import bill_rows, parsed_bill

QUARANTINE = pl.DataFrame(
    {
        "source_file": ["bill.csv"],
        "source_line": [9],
        "column": ["amount"],
        "reason": ["amount 'x' is not an exact CNY amount"],
        "raw": ["x"],
    },
    schema=QUARANTINE_SCHEMA,
)


def test_a_parsed_bill_moves_its_parts_and_comes_back_whole(tmp_path: Path) -> None:
    rows = bill_rows([{"merchant_order_id": f"O{i}", "amount_minor": 100 + i} for i in range(7)])
    totals = [TotalCheck("amount", Decimal("7.21"), Decimal("7.21"))]
    bill = parsed_bill(rows, tmp_path / "parse", parts=3, quarantine=QUARANTINE, totals=totals)
    bill.summary_line = 12
    sources = bill.rows_files
    saved = save_parsed(bill, tmp_path / "normalized")
    assert saved == tmp_path / "normalized"
    assert not any(f.exists() for f in sources)  # moved, not copied
    assert [f.name for f in bill.rows_files] == [f"standard-{i:05d}.parquet" for i in range(3)]
    assert all(f.parent == saved for f in bill.rows_files)
    meta = json.loads((saved / "bill.json").read_text(encoding="utf-8"))
    assert (meta["n_rows"], meta["parts"]) == (7, [f.name for f in bill.rows_files])

    back = load_parsed(saved)
    assert back.rows_files == bill.rows_files
    assert back.n_rows == 7
    assert back.rows.collect().equals(rows)
    assert back.rows.collect_schema() == POLARS_SCHEMA
    assert back.quarantine.equals(QUARANTINE)
    assert (back.path, back.layout, back.rows_read) == (bill.path, "test", 8)
    assert back.totals == totals
    assert back.summary_line == 12
    back.check_conservation()


def test_saving_again_into_the_same_folder_drops_stale_parts(tmp_path: Path) -> None:
    many = bill_rows([{"merchant_order_id": f"O{i}", "amount_minor": 1} for i in range(6)])
    save_parsed(parsed_bill(many, tmp_path / "a", parts=3), tmp_path / "out")
    few = bill_rows([{"merchant_order_id": "X", "amount_minor": 5}])
    (tmp_path / "out" / "standard.parquet").write_bytes(b"the one-file layout of old")
    save_parsed(parsed_bill(few, tmp_path / "b", parts=1), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("standard*.parquet")) == [
        "standard-00000.parquet"
    ]
    back = load_parsed(tmp_path / "out")
    assert back.rows.collect()["merchant_order_id"].to_list() == ["X"]
    # Re-saving a loaded bill in place keeps its parts.
    save_parsed(back, tmp_path / "out")
    assert load_parsed(tmp_path / "out").rows.collect().equals(few)


def test_an_empty_bill_keeps_its_one_empty_part(tmp_path: Path) -> None:
    empty = bill_rows([])
    save_parsed(parsed_bill(empty, tmp_path / "a"), tmp_path / "out")
    back = load_parsed(tmp_path / "out")
    assert back.n_rows == 0
    assert len(back.rows_files) == 1
    assert back.rows.collect().schema == POLARS_SCHEMA


def test_a_missing_part_is_an_input_error(tmp_path: Path) -> None:
    rows = bill_rows([{"merchant_order_id": f"O{i}", "amount_minor": 1} for i in range(4)])
    save_parsed(parsed_bill(rows, tmp_path / "a", parts=2), tmp_path / "out")
    (tmp_path / "out" / "standard-00001.parquet").unlink()
    with pytest.raises(InputError, match=r"standard-00001\.parquet"):
        load_parsed(tmp_path / "out")


def test_a_ledger_day_moves_its_parts_and_comes_back_whole(tmp_path: Path) -> None:
    export = tmp_path / "ledger.csv"
    lines = [",".join(LEDGER_COLUMNS)]
    for i in range(9):
        when = "2024-03-01T12:00:00+08:00" if i % 3 else "2024-03-01T12:00:00"  # naive: bad
        channel = "alipay" if i == 4 else "wechatpay"
        lines.append(f"O{i},,payment,{channel},T{i},1.0{i},CNY,SUCCESS,{when}")
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    work = tmp_path / "work"
    day = load_ledger_day(
        export, "wechatpay", "Asia/Shanghai", dt.date(2024, 3, 1), work, block_bytes=64, part_rows=2
    )
    assert len(day.rows_files) > 1
    expected = day.rows.collect()
    saved = save_ledger(day, tmp_path / "ledger")
    assert all(f.parent == saved for f in day.rows_files)
    assert [f.name for f in day.rows_files] == [
        f"ledger-{i:05d}.parquet" for i in range(len(day.rows_files))
    ]
    assert list(work.iterdir()) == []  # the loader's own folder went with its parts

    back = load_ledger(saved)
    assert back.rows_files == day.rows_files
    assert back.rows.collect().equals(expected)
    assert back.rows.collect_schema() == LEDGER_ROW_SCHEMA
    assert back.quarantine.equals(day.quarantine)
    assert back.quarantine["source_line"].to_list() == [2, 5, 8]
    assert (back.path, back.n_rows, back.rows_read, back.rows_other) == (export, 5, 9, 1)
    assert back.rows_channel_day == 8
