"""A generated day of both channels, with injected breaks and traps, through the CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from data.generate import Expected, Key, generate, write_day
from recon.cli import main

DAY = dt.date(2024, 3, 1)


@pytest.fixture(scope="module")
def day_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Path], dict[str, Expected]]:
    day = generate(DAY, 600, seed=11)
    return write_day(day, DAY, tmp_path_factory.mktemp("day")), day.expected


def _keys(df: pl.DataFrame) -> set[Key]:
    return {
        (t, o, r)
        for t, o, r in df.select("txn_type", "merchant_order_id", "merchant_refund_id").iter_rows()
    }


def _read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False).with_columns(pl.all().fill_null(""))


@pytest.mark.parametrize("channel", ["wechatpay", "alipay"])
def test_every_break_in_its_queue_and_no_false_break(
    channel: str, day_files: tuple[dict[str, Path], dict[str, Expected]], tmp_path: Path
) -> None:
    paths, expected = day_files
    exp = expected[channel]
    out = tmp_path / "out"
    code = main(
        [
            "run", "--channel", channel, "--date", DAY.isoformat(), "--bill", str(paths[channel]),
            "--ledger", str(paths["ledger"]), "--out", str(out), "--store", str(tmp_path / "s.duckdb"),
        ]
    )  # fmt: skip
    assert code == 1
    assert _keys(_read(out / "local_missing.csv")) == exp.local_missing
    assert _keys(_read(out / "channel_missing.csv")) == exp.channel_missing
    fm = _read(out / "field_mismatch.csv")
    got = {
        ((t, o, r), f)
        for t, o, r, f in fm.select(
            "txn_type", "merchant_order_id", "merchant_refund_id", "field"
        ).iter_rows()
    }
    assert got == exp.field_mismatch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quarantined"] == 0
    assert summary["ledger_unsettled"] == 1  # the CLOSED order is not a break
    assert summary["bill"]["rows_read"] == summary["matched"] + len(exp.local_missing)
    # Ids that look like numbers come back exactly as written (the sets above compare them).
    all_ids = {k[1] for k in exp.local_missing | exp.channel_missing}
    assert any(i.startswith("0") or "E" in i or len(i) == 18 for i in all_ids)
    # Parquet beside each CSV holds the same rows.
    assert pl.read_parquet(out / "field_mismatch.parquet").height == fm.height


def test_amount_mismatch_shows_both_values_in_major_units(
    day_files: tuple[dict[str, Path], dict[str, Expected]], tmp_path: Path
) -> None:
    paths, _ = day_files
    out = tmp_path / "out"
    main(["run", "--channel", "wechatpay", "--date", DAY.isoformat(), "--bill", str(paths["wechatpay"]),
          "--ledger", str(paths["ledger"]), "--out", str(out), "--store", str(tmp_path / "s.duckdb")])  # fmt: skip
    rows = _read(out / "field_mismatch.csv").filter(pl.col("field") == "amount")
    assert rows.height > 0
    for ledger_value, channel_value in rows.select("ledger_value", "channel_value").iter_rows():
        # the generator adds one fen on the ledger side
        assert Decimal(ledger_value) - Decimal(channel_value) == Decimal("0.01")
        assert re.fullmatch(r"\d+\.\d{2}", channel_value)


def test_a_bill_of_another_day_is_rejected_not_turned_into_breaks(
    day_files: tuple[dict[str, Path], dict[str, Expected]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths, _ = day_files
    code = main(
        [
            "run", "--channel", "wechatpay", "--date", "2024-03-05", "--bill", str(paths["wechatpay"]),
            "--ledger", str(paths["ledger"]), "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s.duckdb"),
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "no row of this bill falls on 2024-03-05" in err
    assert not (tmp_path / "o").exists()
