"""Reconcile one channel-day: parse the bill, load the ledger, diff, publish, record."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from parsers import ParseContext, ParsedBill, get_parser
from recon.archive import sha256_of
from recon.breaks import update_breaks
from recon.engine import DiffResult, diff
from recon.errors import InputError
from recon.ledger import LedgerDay, load_ledger_day
from recon.outputs import write_outputs
from recon.queues import Queues, build_queues
from recon.report_data import write_reports
from recon.requery import ChannelQuery
from recon.rules import Channel, Rules
from recon.sides import bill_side
from recon.store import open_store, record_run, transaction
from recon.summary import build_summary

log = logging.getLogger("recon.pipeline")

EXIT_CLEAN, EXIT_BREAKS, EXIT_ERROR = 0, 1, 2


@dataclass
class RunResult:
    exit_code: int
    summary: dict[str, Any]
    out_dir: Path
    queues: Queues


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Progress for long runs: each stage's start and duration, on the CLI (-v) and in task logs."""
    started = time.perf_counter()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - started)


def parse_bill(channel: Channel, path: Path, *, check_totals: bool = True) -> ParsedBill:
    """Parse and prove the bill whole: rows conserved and, by default, totals equal."""
    ctx = ParseContext(
        channel=channel.name,
        timezone=channel.timezone,
        status_map=channel.status_map,
        default_currency=channel.currency,
        check_totals=check_totals,
    )
    parsed = get_parser(channel.parser).parse(path, ctx)
    parsed.check_conservation()
    if check_totals:
        parsed.check_totals()
    return parsed


def _check_accounting(bill: ParsedBill, ledger: LedgerDay, counts: dict[str, int]) -> None:
    """Every parsed row is accounted for exactly once, on both sides."""
    bill_rows = counts["matched"] + counts["local_missing"]
    ledger_rows = counts["matched"] + counts["channel_missing"] + counts["ledger_unsettled"]
    if bill_rows != bill.rows.height or ledger_rows != ledger.rows.height:
        raise RuntimeError(
            f"accounting broken: bill {bill.rows.height} rows vs {bill_rows} classified, "
            f"ledger {ledger.rows.height} rows vs {ledger_rows} classified"
        )


def _check_bill_day(bill: ParsedBill, day: dt.date) -> None:
    """A bill none of whose rows falls on the day is the wrong bill: every row would
    be a false break. (A few rows across midnight are normal and are reconciled.)"""
    dates = bill.rows.get_column("business_date")
    if dates.len() and not (dates == day).any():
        first, last = str(dates.min()), str(dates.max())
        raise InputError(
            bill.path,
            f"no row of this bill falls on {day} (its rows run from {first} to {last}): "
            "wrong bill or wrong --date",
        )


def quarantine_of(bill: ParsedBill, ledger: LedgerDay) -> pl.DataFrame:
    return pl.concat(
        [
            bill.quarantine.with_columns(pl.lit("bill").alias("side")),
            ledger.quarantine.with_columns(pl.lit("ledger").alias("side")),
        ]
    ).select("side", "source_file", "source_line", "column", "reason", "raw")


def reconcile_day(
    rules: Rules,
    channel_name: str,
    day: dt.date,
    bill_path: Path,
    ledger_path: Path,
    out_dir: Path,
    *,
    store_path: Path | None = None,
    requery: ChannelQuery | None = None,
) -> RunResult:
    channel = rules.channel(channel_name)
    size = bill_path.stat().st_size / 1e6 if bill_path.exists() else 0.0
    with stage(f"{channel.name} {day}: parse bill {bill_path} ({size:.1f} MB)"):
        bill = parse_bill(channel, bill_path)
    log.info(
        "%s %s: bill rows read %d, parsed %d, quarantined %d",
        channel.name, day, bill.rows_read, bill.rows.height, bill.quarantine.height,
    )  # fmt: skip
    return reconcile_parsed(
        rules, channel_name, day, bill, ledger_path, out_dir, store_path=store_path, requery=requery
    )


@dataclass
class Prepared:
    """A channel-day ready to diff: the proven bill and the ledger's rows of the day."""

    channel: Channel
    day: dt.date
    bill: ParsedBill
    ledger: LedgerDay
    started: dt.datetime


def prepare(
    rules: Rules, channel_name: str, day: dt.date, bill: ParsedBill, ledger_path: Path
) -> Prepared:
    started = dt.datetime.now(dt.UTC)
    channel = rules.channel(channel_name)
    _check_bill_day(bill, day)
    with stage(f"{channel.name} {day}: load ledger {ledger_path}"):
        ledger = load_ledger_day(ledger_path, channel.name, channel.timezone, day)
    log.info(
        "%s %s: ledger %s: %d rows read, %d for the day, %d quarantined",
        channel.name, day, ledger_path, ledger.rows_read, ledger.rows.height, ledger.quarantine.height,
    )  # fmt: skip
    return Prepared(channel, day, bill, ledger, started)


def finish(
    rules: Rules,
    prep: Prepared,
    result: DiffResult,
    out_dir: Path,
    *,
    store_path: Path | None = None,
    requery: ChannelQuery | None = None,
) -> RunResult:
    """Queues, breaks, store, files: everything after the diff (whole or merged shards)."""
    channel, day, bill, ledger = prep.channel, prep.day, prep.bill, prep.ledger
    _check_accounting(bill, ledger, result.counts)
    log.info("%s %s: diff done, %s", channel.name, day, result.counts)
    queues = build_queues(result, channel.name, day)
    quarantine = quarantine_of(bill, ledger)
    has_breaks = queues.has_breaks or quarantine.height > 0
    exit_code = EXIT_BREAKS if has_breaks else EXIT_CLEAN
    files = {
        "bill_file": str(bill.path),
        "bill_sha256": sha256_of(bill.path)[0],
        "ledger_file": str(ledger.path),
        "ledger_sha256": sha256_of(ledger.path)[0],
    }
    summary = build_summary(channel.name, day, bill, ledger, result.counts, queues, files)
    summary["exit_code"] = exit_code
    run_id = uuid.uuid4().hex
    with open_store(store_path or rules.store) as con, transaction(con):
        with stage(f"{channel.name} {day}: update breaks"):
            update = update_breaks(con, channel, day, bill, ledger, result, queues, files, requery)
        summary["breaks"] = update.as_dict()
        log.info("%s %s: breaks %s", channel.name, day, summary["breaks"])
        record_run(
            con,
            run_id=run_id,
            channel=channel.name,
            day=day,
            started_at=prep.started,
            exit_code=exit_code,
            files=files,
            summary=summary,
            queues=queues.items(),
            quarantine=quarantine,
        )
    with stage(f"{channel.name} {day}: write queues and reports"):
        write_outputs(out_dir, queues, quarantine, summary)
        write_reports(store_path or rules.store, channel.name, day, out_dir)
    log.info(
        "%s %s: queues, summary.json, report.html and queues.xlsx in %s", channel.name, day, out_dir
    )
    summary["run_id"] = run_id
    return RunResult(exit_code=exit_code, summary=summary, out_dir=out_dir, queues=queues)


def reconcile_parsed(
    rules: Rules,
    channel_name: str,
    day: dt.date,
    bill: ParsedBill,
    ledger_path: Path,
    out_dir: Path,
    *,
    store_path: Path | None = None,
    requery: ChannelQuery | None = None,
) -> RunResult:
    """Reconcile an already parsed (and proven) bill against the ledger's day."""
    prep = prepare(rules, channel_name, day, bill, ledger_path)
    with stage(
        f"{prep.channel.name} {day}: diff {prep.ledger.rows.height} ledger x {bill.rows.height} bill rows"
    ):
        result = diff(prep.ledger.rows, bill_side(bill.rows), prep.channel.settled_statuses)
    return finish(rules, prep, result, out_dir, store_path=store_path, requery=requery)


__all__ = ["EXIT_BREAKS", "EXIT_CLEAN", "EXIT_ERROR", "InputError", "RunResult", "reconcile_day"]
