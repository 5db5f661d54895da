"""recon.pipeline.reconcile_day loads the ledger beside the bill parse: the same results,
errors in the same order as one after the other, and a failed bill stops the load."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from data.generate import generate, write_day
from recon import pipeline
from recon.errors import InputError
from recon.ledger import LoadStopped, load_ledger_day
from recon.rules import load_rules
from tests.test_ledger import row, write_csv

DAY = dt.date(2024, 3, 1)
SH = "Asia/Shanghai"


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_day(generate(DAY, 40, seed=3), DAY, tmp_path_factory.mktemp("day"))


def reconcile(bill: Path, ledger: Path, out: Path, day: dt.date = DAY) -> pipeline.RunResult:
    return pipeline.reconcile_day(
        load_rules(), "wechatpay", day, bill, ledger, out / "out", store_path=out / "s.duckdb"
    )


def bad_totals(bill: Path, out: Path) -> Path:
    """The bill with its first summary figure (the row count) off by one."""
    lines = bill.read_bytes().decode("utf-8").split("\r\n")
    figures = lines[-2].split(",")
    figures[0] = f"`{int(figures[0].removeprefix('`')) + 1}"
    lines[-2] = ",".join(figures)
    path = out / "bad_totals.csv"
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    return path


def no_ledger_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("ledger-")]


def test_the_day_is_the_same_as_with_the_ledger_loaded_after_the_bill(
    day_files: dict[str, Path], tmp_path: Path
) -> None:
    beside = reconcile(day_files["wechatpay"], day_files["ledger"], tmp_path / "beside")
    rules = load_rules()
    bill = pipeline.parse_bill(rules.channel("wechatpay"), day_files["wechatpay"])
    after = pipeline.reconcile_parsed(
        rules, "wechatpay", DAY, bill, day_files["ledger"], tmp_path / "after" / "out",
        store_path=tmp_path / "after" / "s.duckdb",
    )  # fmt: skip
    assert beside.exit_code == after.exit_code == 1
    for name in ("ledger", "queues", "breaks"):
        assert beside.summary[name] == after.summary[name], name
    for q in ("local_missing", "channel_missing", "field_mismatch"):
        a, b = (pl.read_csv(r.out_dir / f"{q}.csv", infer_schema=False) for r in (beside, after))
        assert a.height > 0, q
        assert a.equals(b), q


def test_a_bad_bill_is_reported_before_a_missing_ledger(
    day_files: dict[str, Path], tmp_path: Path
) -> None:
    bill = bad_totals(day_files["wechatpay"], tmp_path)
    with pytest.raises(InputError) as info:
        reconcile(bill, tmp_path / "no_ledger.csv", tmp_path)
    assert info.value.path == bill
    assert "control totals" in str(info.value)
    assert no_ledger_threads()
    assert not (tmp_path / "out").exists()


def test_a_bill_of_another_day_is_reported_before_a_bad_ledger(
    day_files: dict[str, Path], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.csv"
    pl.read_csv(day_files["ledger"], infer_schema=False).drop("amount").write_csv(ledger)
    with pytest.raises(InputError, match="no row of this bill falls on 2024-03-05"):
        reconcile(day_files["wechatpay"], ledger, tmp_path, day=dt.date(2024, 3, 5))
    with pytest.raises(InputError, match="lacks column") as info:
        reconcile(day_files["wechatpay"], ledger, tmp_path)
    assert info.value.path == ledger


def test_a_failed_bill_stops_the_ledger_load_and_waits_for_it(
    day_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that lasts until it is told to stop: the run must stop it, and must not
    return (removing the scratch folder) before the load has ended."""
    seen: dict[str, Any] = {}

    def endless_load(*args: Any, stop: threading.Event, **kwargs: Any) -> None:
        seen["stopped"] = stop.wait(timeout=60)
        time.sleep(0.5)  # a run that did not wait would have removed its folder by now
        seen["work_dir_there"] = Path(args[4]).is_dir()
        raise LoadStopped("stopped")

    monkeypatch.setattr(pipeline, "load_ledger_day", endless_load)
    bill = bad_totals(day_files["wechatpay"], tmp_path)
    with pytest.raises(InputError, match="control totals"):
        reconcile(bill, day_files["ledger"], tmp_path)
    assert seen == {"stopped": True, "work_dir_there": True}
    assert no_ledger_threads()


def test_a_stopped_load_ends_at_its_next_batch_and_leaves_no_parts(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [row(f"O{i}") for i in range(60)])

    class StopAfter(threading.Event):
        """Set once the load has asked this many times (one look per batch)."""

        def __init__(self, looks: int) -> None:
            super().__init__()
            self.looks = looks

        def is_set(self) -> bool:
            self.looks -= 1
            return self.looks < 0 or super().is_set()

    stop = StopAfter(3)
    work = tmp_path / "work"
    with pytest.raises(LoadStopped):
        load_ledger_day(path, "wechatpay", SH, DAY, work, block_bytes=256, part_rows=5, stop=stop)
    assert stop.looks == -1  # three batches loaded, stopped at the fourth
    assert list(work.rglob("*")) == []
    whole = load_ledger_day(path, "wechatpay", SH, DAY, tmp_path / "w2", stop=threading.Event())
    assert whole.n_rows == 60
