"""The embedded DuckDB store: run history, each channel-day's queues, quarantine.

The schema is versioned: ``MIGRATIONS[i]`` brings version i to i+1, applied in
order inside a transaction when the store is opened. Re-running a channel-day
replaces that day's queue and quarantine rows; the run history keeps every run.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recon.duck import one_row

MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
      run_id VARCHAR PRIMARY KEY,
      channel VARCHAR NOT NULL,
      business_date DATE NOT NULL,
      started_at TIMESTAMPTZ NOT NULL,
      finished_at TIMESTAMPTZ,
      exit_code INTEGER,
      bill_file VARCHAR,
      bill_sha256 VARCHAR,
      ledger_file VARCHAR,
      ledger_sha256 VARCHAR,
      summary JSON
    );
    CREATE TABLE queue_items (
      run_id VARCHAR NOT NULL,
      channel VARCHAR NOT NULL,
      business_date DATE NOT NULL,
      queue VARCHAR NOT NULL,
      txn_type VARCHAR, merchant_order_id VARCHAR, merchant_refund_id VARCHAR,
      channel_txn_id VARCHAR, amount_minor BIGINT, currency VARCHAR,
      field VARCHAR, ledger_value VARCHAR, channel_value VARCHAR,
      bill_file VARCHAR, bill_line BIGINT, ledger_file VARCHAR, ledger_row BIGINT
    );
    CREATE TABLE quarantine (
      run_id VARCHAR NOT NULL,
      channel VARCHAR NOT NULL,
      business_date DATE NOT NULL,
      side VARCHAR NOT NULL,
      source_file VARCHAR, source_line BIGINT, "column" VARCHAR, reason VARCHAR, raw VARCHAR
    );
    """,
    # 2: where each channel-day stands (manual handling when the bill never came), alerts.
    """
    CREATE TABLE channel_days (
      channel VARCHAR NOT NULL,
      business_date DATE NOT NULL,
      state VARCHAR NOT NULL,
      detail VARCHAR,
      updated_at TIMESTAMPTZ NOT NULL,
      PRIMARY KEY (channel, business_date)
    );
    CREATE TABLE alerts (
      raised_at TIMESTAMPTZ NOT NULL,
      channel VARCHAR NOT NULL,
      business_date DATE NOT NULL,
      kind VARCHAR NOT NULL,
      message VARCHAR NOT NULL
    );
    """,
    # 3: the break lifecycle (差错处理): one row per break with a stable identity across
    # runs, and an append-only audit log of every state change.
    """
    CREATE SEQUENCE break_seq START 1;
    CREATE SEQUENCE audit_seq START 1;
    CREATE TABLE break_items (
      break_id BIGINT PRIMARY KEY DEFAULT nextval('break_seq'),
      channel VARCHAR NOT NULL,
      txn_type VARCHAR NOT NULL,
      merchant_order_id VARCHAR NOT NULL,
      merchant_refund_id VARCHAR NOT NULL,
      kind VARCHAR NOT NULL,
      field VARCHAR NOT NULL DEFAULT '',
      occurrence INTEGER NOT NULL DEFAULT 1,
      business_date DATE NOT NULL,
      state VARCHAR NOT NULL,
      reason_code VARCHAR NOT NULL DEFAULT '',
      amount_minor BIGINT,
      currency VARCHAR,
      amount VARCHAR,
      ledger_value VARCHAR,
      channel_value VARCHAR,
      channel_txn_id VARCHAR,
      first_seen DATE NOT NULL,
      last_seen DATE NOT NULL,
      bill_file VARCHAR, bill_sha256 VARCHAR, bill_line BIGINT,
      ledger_file VARCHAR, ledger_sha256 VARCHAR, ledger_row BIGINT,
      assignee VARCHAR,
      resolution VARCHAR,
      evidence VARCHAR,
      requery_status VARCHAR,
      requery_note VARCHAR,
      updated_at TIMESTAMPTZ NOT NULL,
      UNIQUE (channel, txn_type, merchant_order_id, merchant_refund_id, kind, field, occurrence)
    );
    CREATE TABLE audit_log (
      seq BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'),
      logged_at TIMESTAMPTZ NOT NULL,
      actor VARCHAR NOT NULL,
      break_id BIGINT NOT NULL,
      action VARCHAR NOT NULL,
      from_state VARCHAR,
      to_state VARCHAR,
      note VARCHAR
    );
    CREATE TABLE break_comments (
      logged_at TIMESTAMPTZ NOT NULL,
      actor VARCHAR NOT NULL,
      break_id BIGINT NOT NULL,
      body VARCHAR NOT NULL
    );
    -- Every row of every day's bill, for checks that look across days (duplicates,
    -- refunds against earlier payments); replaced per channel-day like the queues.
    -- (Migration 4 drops the columns no check reads.)
    CREATE TABLE bill_rows (
      channel VARCHAR NOT NULL,
      business_date DATE NOT NULL,
      txn_type VARCHAR, merchant_order_id VARCHAR, merchant_refund_id VARCHAR,
      channel_txn_id VARCHAR, amount_minor BIGINT, fee_minor BIGINT, currency VARCHAR,
      status VARCHAR, trade_time TIMESTAMPTZ, source_file VARCHAR, source_line BIGINT
    );
    CREATE VIEW breaks AS
      SELECT *, (current_date - first_seen) AS age_days
      FROM break_items;
    """,
    # 4: bill_rows keeps only what the cross-day checks read (the key and the amount): a
    # day may have 100M rows, and they are written on every run of it.
    """
    ALTER TABLE bill_rows DROP COLUMN channel_txn_id;
    ALTER TABLE bill_rows DROP COLUMN fee_minor;
    ALTER TABLE bill_rows DROP COLUMN currency;
    ALTER TABLE bill_rows DROP COLUMN status;
    ALTER TABLE bill_rows DROP COLUMN trade_time;
    ALTER TABLE bill_rows DROP COLUMN source_file;
    ALTER TABLE bill_rows DROP COLUMN source_line;
    """,
]

BREAK_STATES = ("open", "pending_timing", "auto_resolved", "resolved", "written_off")
CLOSED_STATES = ("auto_resolved", "resolved", "written_off")

_ITEM_COLUMNS = [
    "txn_type", "merchant_order_id", "merchant_refund_id", "channel_txn_id", "amount_minor",
    "currency", "field", "ledger_value", "channel_value",
    "bill_file", "bill_line", "ledger_file", "ledger_row",
]  # fmt: skip


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = one_row(con.execute("SELECT max(version) FROM schema_version"))
    current = int(row[0]) if row and row[0] is not None else 0
    for version in range(current, len(MIGRATIONS)):
        con.execute("BEGIN")
        con.execute(MIGRATIONS[version])
        con.execute("INSERT INTO schema_version VALUES (?)", [version + 1])
        con.execute("COMMIT")
    return len(MIGRATIONS)


def _connect(path: Path, wait: float) -> duckdb.DuckDBPyConnection:
    """DuckDB allows one writing process per file: wait for another run's lock."""
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def open_store(
    path: Path,
    wait: float = 120.0,
    *,
    memory_limit: str | None = None,
    temp_dir: Path | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store, migrated. A run's breaks read a whole day's Parquet parts in this
    connection: ``memory_limit`` (e.g. "1GB") and ``temp_dir`` bound it, spilling to disk
    (DuckDB's defaults otherwise: most of the machine's memory, ``<store>.tmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(path, wait)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # no bars in task logs
        if memory_limit is not None:
            con.execute("SET memory_limit = ?", [memory_limit])
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
            con.execute("SET temp_directory = ?", [str(temp_dir)])
        migrate(con)
        yield con
    finally:
        con.close()


def record_run(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    channel: str,
    day: dt.date,
    started_at: dt.datetime,
    exit_code: int,
    files: Mapping[str, str | None],
    summary: dict[str, Any],
    queues: list[tuple[str, pl.DataFrame]],
    quarantine: pl.DataFrame,
) -> None:
    """Record one run and make its queues the channel-day's current ones.

    The caller holds the transaction, so the run, its queues and its breaks land together.
    """
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id, channel, day, started_at, dt.datetime.now(dt.UTC), exit_code,
            files.get("bill_file"), files.get("bill_sha256"),
            files.get("ledger_file"), files.get("ledger_sha256"),
            json.dumps(summary, default=str),
        ],
    )  # fmt: skip
    for table in ("queue_items", "quarantine"):
        con.execute(f"DELETE FROM {table} WHERE channel = ? AND business_date = ?", [channel, day])
    for queue, df in queues:
        items = df.with_columns(
            *(pl.lit(None, pl.String).alias(c) for c in _ITEM_COLUMNS if c not in df.columns)
        ).select(
            pl.lit(run_id).alias("run_id"),
            pl.lit(channel).alias("channel"),
            pl.lit(day).alias("business_date"),
            pl.lit(queue).alias("queue"),
            *_ITEM_COLUMNS,
        )
        con.register("_items", items)
        con.execute("INSERT INTO queue_items SELECT * FROM _items")
        con.unregister("_items")
    q = quarantine.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(channel).alias("channel"),
        pl.lit(day).alias("business_date"),
        "side", "source_file", "source_line", "column", "reason", "raw",
    )  # fmt: skip
    con.register("_q", q)
    con.execute("INSERT INTO quarantine SELECT * FROM _q")
    con.unregister("_q")


def set_day_state(
    con: duckdb.DuckDBPyConnection, channel: str, day: dt.date, state: str, detail: str = ""
) -> None:
    """Where a channel-day stands: waiting, bill_missing_manual, reconciled..."""
    con.execute(
        "INSERT OR REPLACE INTO channel_days VALUES (?, ?, ?, ?, ?)",
        [channel, day, state, detail, dt.datetime.now(dt.UTC)],
    )


def day_state(con: duckdb.DuckDBPyConnection, channel: str, day: dt.date) -> tuple[str, str] | None:
    row = one_row(
        con.execute(
            "SELECT state, detail FROM channel_days WHERE channel = ? AND business_date = ?",
            [channel, day],
        )
    )
    return (str(row[0]), str(row[1])) if row else None
