"""recon.store: versioned DuckDB schema; re-running a channel-day replaces its queues."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import recon.store as store
from data.generate import generate, write_day
from recon.cli import main
from recon.store import MIGRATIONS, day_state, open_store, record_run, set_day_state, transaction

DAY = dt.date(2024, 3, 1)
NEXT = dt.date(2024, 3, 2)
TABLES = {"schema_version", "runs", "queue_items", "quarantine", "channel_days", "alerts"}


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small generated day with breaks, plus one ledger row that is quarantined."""
    day = generate(DAY, 30, seed=2)
    day.ledger.append(
        {
            "merchant_order_id": "NAIVE",
            "merchant_refund_id": "",
            "txn_type": "payment",
            "channel": "wechatpay",
            "channel_txn_id": "",
            "amount": "1.00",
            "currency": "CNY",
            "status": "SUCCESS",
            "created_at": "2024-03-01T12:00:00",
        }
    )
    files = write_day(day, DAY, tmp_path_factory.mktemp("day"))
    # The next day has its own bill: a bill is rejected on a day none of its rows fall on.
    following = write_day(generate(NEXT, 30, seed=4), NEXT, tmp_path_factory.mktemp("next"))
    return files | {f"{k}@next": v for k, v in following.items()}


def run(
    files: dict[str, Path], db: Path, out: Path, day: dt.date = DAY, channel: str = "wechatpay"
) -> int:
    at = "@next" if day == NEXT else ""
    return main(
        [
            "run", "--channel", channel, "--date", day.isoformat(), "--bill", str(files[channel + at]),
            "--ledger", str(files["ledger" + at]), "--out", str(out), "--store", str(db),
        ]
    )  # fmt: skip


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def items(
    db: Path, channel: str, day: dt.date, *, with_run_id: bool = False
) -> list[tuple[Any, ...]]:
    cols = "*" if with_run_id else "* EXCLUDE (run_id)"
    return query(
        db,
        f"SELECT {cols} FROM queue_items WHERE channel = ? AND business_date = ? ORDER BY ALL",
        [channel, day],
    )


def quarantine(db: Path, channel: str, day: dt.date) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT * EXCLUDE (run_id) FROM quarantine WHERE channel = ? AND business_date = ? ORDER BY ALL",
        [channel, day],
    )


def run_ids(db: Path, channel: str, day: dt.date) -> list[str]:
    rows = query(
        db,
        "SELECT run_id FROM runs WHERE channel = ? AND business_date = ? ORDER BY started_at",
        [channel, day],
    )
    return [str(r[0]) for r in rows]


# --- schema and migrations -----------------------------------------------------------------


def versions(db: Path) -> list[int]:
    return [int(r[0]) for r in query(db, "SELECT version FROM schema_version ORDER BY version")]


def tables(db: Path) -> set[str]:
    return {str(r[0]) for r in query(db, "SELECT table_name FROM information_schema.tables")}


def test_new_store_is_at_the_latest_version(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "s.duckdb"
    with open_store(db):
        pass
    assert versions(db) == list(range(1, len(MIGRATIONS) + 1))
    assert tables(db) >= TABLES


def test_opening_an_existing_store_does_not_rerun_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "s.duckdb"
    with open_store(db) as con:
        set_day_state(con, "wechatpay", DAY, "waiting", "first open")
    # Were any migration run again, this SQL would fail.
    monkeypatch.setattr(store, "MIGRATIONS", ["NOT SQL AT ALL"] * len(MIGRATIONS))
    with open_store(db) as con:
        assert store.migrate(con) == len(MIGRATIONS)
        assert day_state(con, "wechatpay", DAY) == ("waiting", "first open")
    assert versions(db) == list(range(1, len(MIGRATIONS) + 1))


def test_an_opened_store_leaves_no_result_open(tmp_path: Path) -> None:
    """DuckDB refuses register() while a query's result is unfinished: opening a store
    (its migration check), reading a day's state or a break's must each leave none."""
    db = tmp_path / "s.duckdb"
    frame = pl.DataFrame({"x": [1]})
    for _ in range(2):  # new, then existing (no migration runs)
        with open_store(db) as con:
            con.register("frame", frame)
            con.unregister("frame")
            set_day_state(con, "wechatpay", DAY, "waiting")
            assert day_state(con, "wechatpay", DAY) == ("waiting", "")
            con.register("frame", frame)
            con.unregister("frame")


def test_only_new_migrations_run_on_an_older_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "s.duckdb"
    with duckdb.connect(str(db)) as con:  # a store from before migration 2
        con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        con.execute(MIGRATIONS[0])
        con.execute("INSERT INTO schema_version VALUES (1)")
        con.execute(
            "INSERT INTO runs (run_id, channel, business_date, started_at) VALUES "
            "('old', 'wechatpay', '2024-02-01', now())"
        )
    extra = "CREATE TABLE extra (x INTEGER)"
    monkeypatch.setattr(store, "MIGRATIONS", [*MIGRATIONS, extra])
    with open_store(db):
        pass
    assert versions(db) == list(range(1, len(MIGRATIONS) + 2))
    assert tables(db) >= TABLES | {"extra"}
    assert query(db, "SELECT run_id FROM runs") == [("old",)]


def test_day_state_is_replaced_not_added(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with open_store(db) as con:
        assert day_state(con, "wechatpay", DAY) is None
        set_day_state(con, "wechatpay", DAY, "waiting")
        set_day_state(con, "wechatpay", DAY, "reconciled", "exit 1")
        set_day_state(con, "alipay", DAY, "waiting")
        assert day_state(con, "wechatpay", DAY) == ("reconciled", "exit 1")
        assert day_state(con, "alipay", DAY) == ("waiting", "")
    assert query(db, "SELECT count(*) FROM channel_days") == [(2,)]


# --- re-running a channel-day ------------------------------------------------------------------


def test_rerunning_a_day_replaces_its_queues_and_keeps_every_run(
    tmp_path: Path, day_files: dict[str, Path]
) -> None:
    db = tmp_path / "s.duckdb"
    assert run(day_files, db, tmp_path / "n", day=NEXT) == 1
    assert run(day_files, db, tmp_path / "a", channel="alipay") == 1
    other_day = items(db, "wechatpay", NEXT, with_run_id=True)
    other_channel = items(db, "alipay", DAY, with_run_id=True)
    assert other_day
    assert other_channel

    assert run(day_files, db, tmp_path / "w1") == 1
    once, q_once = items(db, "wechatpay", DAY), quarantine(db, "wechatpay", DAY)
    assert once
    assert len(q_once) == 1  # the naive created_at
    queues = {str(r[0]) for r in query(db, "SELECT DISTINCT queue FROM queue_items")}
    assert queues == {"local_missing", "channel_missing", "field_mismatch"}

    assert run(day_files, db, tmp_path / "w2") == 1
    assert items(db, "wechatpay", DAY) == once  # replaced, not doubled
    assert quarantine(db, "wechatpay", DAY) == q_once
    ids = run_ids(db, "wechatpay", DAY)
    assert len(ids) == 2
    assert len(set(ids)) == 2
    current = query(
        db,
        "SELECT DISTINCT run_id FROM queue_items WHERE channel = 'wechatpay' AND business_date = ?",
        [DAY],
    )
    assert current == [(ids[1],)]  # the day's queues are the latest run's

    assert items(db, "wechatpay", NEXT, with_run_id=True) == other_day
    assert items(db, "alipay", DAY, with_run_id=True) == other_channel
    assert query(db, "SELECT count(*) FROM runs") == [(4,)]


def test_stored_queues_match_the_published_csv(tmp_path: Path, day_files: dict[str, Path]) -> None:
    db = tmp_path / "s.duckdb"
    out = tmp_path / "out"
    assert run(day_files, db, out) == 1
    for queue in ("local_missing", "channel_missing", "field_mismatch"):
        csv = pl.read_csv(out / f"{queue}.csv", infer_schema=False)
        stored = query(
            db,
            "SELECT count(*), coalesce(sum(amount_minor), 0) FROM queue_items "
            "WHERE channel = 'wechatpay' AND business_date = ? AND queue = ?",
            [DAY, queue],
        )
        assert stored == [(csv.height, sum(int(v) for v in csv["amount_minor"]))], queue
    [(exit_code, summary)] = query(db, "SELECT exit_code, summary->>'$.matched' FROM runs")
    assert exit_code == 1
    assert int(summary) > 0


def test_a_failed_record_leaves_the_previous_queues(
    tmp_path: Path, day_files: dict[str, Path]
) -> None:
    db = tmp_path / "s.duckdb"
    assert run(day_files, db, tmp_path / "out") == 1
    before = items(db, "wechatpay", DAY, with_run_id=True)
    bad_quarantine = pl.DataFrame({"source_file": ["x"]})  # lacks columns: fails after DELETE
    # The pipeline records a run inside one transaction with its breaks.
    with (
        open_store(db) as con,
        pytest.raises(pl.exceptions.ColumnNotFoundError),
        transaction(con),
    ):
        record_run(
            con,
            run_id="broken",
            channel="wechatpay",
            day=DAY,
            started_at=dt.datetime.now(dt.UTC),
            exit_code=0,
            files={},
            summary={},
            queues=[],
            quarantine=bad_quarantine,
        )
    assert items(db, "wechatpay", DAY, with_run_id=True) == before
    assert "broken" not in run_ids(db, "wechatpay", DAY)


def test_the_store_connection_can_be_bounded(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with open_store(tmp_path / "s.duckdb", memory_limit="256MB", temp_dir=spill) as con:
        limit, temp = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone() or ("", "")
    assert limit == "244.1 MiB"  # 256 MB
    assert temp == str(spill)
    assert spill.is_dir()
