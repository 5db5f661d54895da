"""Reconcile one channel-day: parse the bill (loading the ledger beside it), diff, publish,
record."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from parsers import ParseContext, ParsedBill, get_parser
from recon.archive import sha256_of
from recon.breaks import update_breaks
from recon.duck import work_connection
from recon.engine import DiffResult, diff
from recon.errors import InputError
from recon.ledger import LedgerDay, load_ledger_day
from recon.outputs import write_outputs
from recon.progress import duck_progress, load_progress, parse_progress, stage
from recon.queues import Queues, build_queues
from recon.report_data import write_reports
from recon.requery import ChannelQuery
from recon.rules import Channel, Rules
from recon.sides import bill_side_sql, ledger_side_sql
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


def parse_bill(
    channel: Channel,
    path: Path,
    *,
    check_totals: bool = True,
    work_dir: Path | None = None,
    what: str | None = None,
) -> ParsedBill:
    """Parse and prove the bill whole: rows conserved and, by default, totals equal.
    The standard rows go to Parquet parts in ``work_dir`` (a temporary one when None).
    Progress is logged as ``what`` (by default the channel and the file's name)."""
    ctx = ParseContext(
        channel=channel.name,
        timezone=channel.timezone,
        status_map=channel.status_map,
        default_currency=channel.currency,
        check_totals=check_totals,
        work_dir=work_dir,
        progress=parse_progress(what or f"{channel.name}: parse bill {path.name}"),
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
    if bill_rows != bill.n_rows or ledger_rows != ledger.n_rows:
        raise RuntimeError(
            f"accounting broken: bill {bill.n_rows} rows vs {bill_rows} classified, "
            f"ledger {ledger.n_rows} rows vs {ledger_rows} classified"
        )


def _check_bill_day(bill: ParsedBill, day: dt.date) -> None:
    """A bill none of whose rows falls on the day is the wrong bill: every row would
    be a false break. (A few rows across midnight are normal and are reconciled.)"""
    date = pl.col("business_date")
    on_day, first, last = (
        bill.rows.select(
            (date == day).any().alias("on_day"), date.min().alias("first"), date.max().alias("last")
        )
        .collect(engine="streaming")
        .row(0)
    )
    if bill.n_rows and not on_day:
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
    with work_space(out_dir) as work, ledger_beside(channel, day, ledger_path, work) as ledger:
        with stage(f"{channel.name} {day}: parse bill {bill_path} ({size:.1f} MB)"):
            bill = parse_bill(
                channel, bill_path, work_dir=work / "bill", what=f"{channel.name} {day}: parse bill"
            )
        log.info(
            "%s %s: bill rows read %d, parsed %d, quarantined %d",
            channel.name, day, bill.rows_read, bill.n_rows, bill.quarantine.height,
        )  # fmt: skip
        return reconcile_parsed(
            rules, channel_name, day, bill, ledger_path, out_dir,
            store_path=store_path, requery=requery, work_dir=work, ledger=ledger,
        )  # fmt: skip


@contextmanager
def ledger_beside(
    channel: Channel, day: dt.date, ledger_path: Path, work_dir: Path
) -> Iterator[Future[LedgerDay]]:
    """The ledger's day, loading in a thread while the caller parses the bill: the bill
    parse leaves part of both cores idle (its parent mostly waits on its workers).

    Errors keep their sequential order: the caller takes the result only once the bill
    is proven, so a bad bill is reported before a bad ledger. When the caller fails, the
    load is stopped at its next batch and waited for, before the scratch folder goes."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-load")

    def load() -> LedgerDay:
        with stage(f"{channel.name} {day}: load ledger {ledger_path} (beside the bill)"):
            return load_ledger_day(
                ledger_path, channel.name, channel.timezone, day, work_dir,
                stop=stop, progress=load_progress(f"{channel.name} {day}: load ledger"),
            )  # fmt: skip

    try:
        yield pool.submit(load)
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True)


@contextmanager
def work_space(out_dir: Path) -> Iterator[Path]:
    """A scratch folder beside the outputs (same disk as the data) for the run's Parquet
    parts and DuckDB's spill files, removed when the run ends."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-work-", dir=out_dir.parent) as d:
        yield Path(d)


@dataclass
class Prepared:
    """A channel-day ready to diff: the proven bill and the ledger's rows of the day."""

    channel: Channel
    day: dt.date
    bill: ParsedBill
    ledger: LedgerDay
    started: dt.datetime
    work_dir: Path  # the run's scratch folder: ledger parts, DuckDB spill files
    digests: Future[list[str]] | None = None  # sha256 of the bill and ledger files


def prepare(
    rules: Rules,
    channel_name: str,
    day: dt.date,
    bill: ParsedBill,
    ledger_path: Path,
    work_dir: Path,
    ledger_loading: Future[LedgerDay] | None = None,
) -> Prepared:
    """Check the bill's day and load the ledger's day (its parts go to ``work_dir``), or
    take it from ``ledger_loading`` (see ledger_beside)."""
    started = dt.datetime.now(dt.UTC)
    channel = rules.channel(channel_name)
    # The files' digests (provenance in the summary) are taken beside the ledger load (or,
    # when it ran beside the bill parse, the diff): hashlib lets other threads run meanwhile.
    digests = _hash_in_background(bill.path, ledger_path)
    _check_bill_day(bill, day)
    if ledger_loading is not None:
        ledger = ledger_loading.result()
    else:
        with stage(f"{channel.name} {day}: load ledger {ledger_path}"):
            ledger = load_ledger_day(
                ledger_path, channel.name, channel.timezone, day, work_dir,
                progress=load_progress(f"{channel.name} {day}: load ledger"),
            )  # fmt: skip
    log.info(
        "%s %s: ledger %s: %d rows read, %d for the day, %d quarantined",
        channel.name, day, ledger_path, ledger.rows_read, ledger.n_rows, ledger.quarantine.height,
    )  # fmt: skip
    return Prepared(channel, day, bill, ledger, started, work_dir, digests)


def _hash_in_background(*paths: Path) -> Future[list[str]]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    future = pool.submit(lambda: [sha256_of(p)[0] for p in paths])
    pool.shutdown(wait=False)
    return future


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
    bill_sha, ledger_sha = (
        prep.digests.result()
        if prep.digests
        else [sha256_of(p)[0] for p in (bill.path, ledger.path)]
    )
    files = {
        "bill_file": str(bill.path),
        "bill_sha256": bill_sha,
        "ledger_file": str(ledger.path),
        "ledger_sha256": ledger_sha,
    }
    summary = build_summary(channel.name, day, bill, ledger, result.counts, queues, files)
    summary["exit_code"] = exit_code
    run_id = uuid.uuid4().hex
    store = open_store(
        store_path or rules.store,
        memory_limit=channel.scale.memory_limit,
        temp_dir=prep.work_dir / "duckdb-store",
    )
    with store as con, transaction(con):
        what = f"{channel.name} {day}: update breaks"
        with stage(what), duck_progress(con, what):
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
        write_reports(store_path or rules.store, channel.name, day, out_dir, tz=channel.timezone)
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
    work_dir: Path | None = None,
    ledger: Future[LedgerDay] | None = None,
) -> RunResult:
    """Reconcile an already parsed (and proven) bill against the ledger's day (loaded
    here, or by ``ledger``: see ledger_beside)."""
    if work_dir is None:
        with work_space(out_dir) as work:
            return reconcile_parsed(
                rules, channel_name, day, bill, ledger_path, out_dir,
                store_path=store_path, requery=requery, work_dir=work, ledger=ledger,
            )  # fmt: skip
    prep = prepare(rules, channel_name, day, bill, ledger_path, work_dir, ledger)
    with stage(
        f"{prep.channel.name} {day}: diff {prep.ledger.n_rows} ledger x {bill.n_rows} bill rows"
    ):
        result = diff_prepared(prep)
    return finish(rules, prep, result, out_dir, store_path=store_path, requery=requery)


def diff_prepared(prep: Prepared) -> DiffResult:
    """The both-ways diff of a prepared day, in DuckDB straight from the Parquet parts,
    spilling to the run's scratch folder beyond the channel's memory limit."""
    con = work_connection(prep.work_dir / "duckdb", prep.channel.scale.memory_limit)
    try:
        with duck_progress(con, f"{prep.channel.name} {prep.day}: diff"):
            return diff(
                ledger_side_sql(prep.ledger.rows_files),
                bill_side_sql(prep.bill.rows_files),
                prep.channel.settled_statuses,
                con,
            )
    finally:
        con.close()


__all__ = ["EXIT_BREAKS", "EXIT_CLEAN", "EXIT_ERROR", "InputError", "RunResult", "reconcile_day"]
