"""The nightly steps for one channel-day, free of Airflow: the DAG only wires them.

wait_for_bill -> download -> normalize -> reconcile -> publish. Each step takes
and returns paths (never data) and is idempotent for its channel-day: running a
day again replaces that day's results.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from recon.acquire import BillNotReady, check_ready, fetch_bill
from recon.alerts import raise_alert
from recon.bill_io import load_parsed, save_parsed
from recon.errors import ConfigError
from recon.pipeline import RunResult, parse_bill, reconcile_day, reconcile_parsed
from recon.progress import duck_progress, stage
from recon.rules import Channel, Rules
from recon.sftp import PermanentFetchError, SftpEndpoint
from recon.store import open_store, set_day_state

log = logging.getLogger("recon.nightly")
T = TypeVar("T")

MANUAL = "bill_missing_manual"


class BillMissingError(PermanentFetchError):
    """The bill did not come by the deadline: the channel-day is a person's now."""


def business_day(interval_end: dt.datetime, timezone: str) -> dt.date:
    """The run scheduled at ``interval_end`` reconciles the local day before it."""
    return interval_end.astimezone(ZoneInfo(timezone)).date() - dt.timedelta(days=1)


def _require(value: T | None, what: str, channel: Channel) -> T:
    if value is None:
        raise ConfigError(f"channels.{channel.name}.{what}: required table is missing")
    return value


def day_dir(rules: Rules, channel: str, day: dt.date) -> Path:
    return rules.work / channel / day.isoformat()


def endpoint_from_connection(
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any],
) -> SftpEndpoint:
    """An Airflow connection's fields as an endpoint (extra: key_file, private_key,
    known_hosts, host_key); the caller reads the connection, recon stays Airflow-free."""

    def opt(key: str) -> str | None:
        value = extra.get(key)
        return str(value) if value else None

    key_file, known_hosts = opt("key_file"), opt("known_hosts")
    return SftpEndpoint(
        host=host or "127.0.0.1",
        port=int(port or 22),
        username=login or "",
        password=password or None,
        key_file=Path(key_file) if key_file else None,
        private_key=opt("private_key"),
        known_hosts=Path(known_hosts) if known_hosts else None,
        host_key=opt("host_key"),
    )


def endpoint_from_env(channel: str) -> SftpEndpoint:
    """Outside Airflow: ``RECON_SFTP_<CHANNEL>_URL=sftp://user@host:port/?known_hosts=...``."""
    var = f"RECON_SFTP_{channel.upper()}_URL"
    url = os.environ.get(var)
    if not url:
        raise ConfigError(f"{var} is not set: it gives the SFTP endpoint of channel {channel}")
    return SftpEndpoint.from_url(url)


def mark_bill_missing(rules: Rules, channel: str, day: dt.date, why: str) -> None:
    """Record the channel-day for manual handling and alert; nothing is reconciled."""
    with open_store(rules.store) as con:
        set_day_state(con, channel, day, MANUAL, why)
    raise_alert(rules.store, channel, day, MANUAL, f"bill missing, manual handling: {why}")


def wait_for_bill(
    rules: Rules,
    channel_name: str,
    day: dt.date,
    endpoint: SftpEndpoint,
    deadline: dt.datetime,
    *,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Return the remote path once the bill is complete; raise BillNotReady to be
    polled again, or BillMissingError (after recording it) once past the deadline."""
    channel = rules.channel(channel_name)
    sftp = _require(channel.sftp, "sftp", channel)
    try:
        remote = check_ready(endpoint, sftp, day, sleep=sleep)
    except BillNotReady as exc:
        if now() >= deadline:
            mark_bill_missing(rules, channel.name, day, f"{exc} (deadline {deadline.isoformat()})")
            raise BillMissingError(f"{channel.name} {day}: {exc}; deadline passed") from exc
        log.info("%s %s: %s; next look after the retry delay", channel.name, day, exc)
        raise
    with open_store(rules.store) as con:
        set_day_state(con, channel.name, day, "bill_ready", remote)
    return remote


def download(
    rules: Rules, channel_name: str, day: dt.date, endpoint: SftpEndpoint, *, force: bool = False
) -> str:
    channel = rules.channel(channel_name)
    sftp = _require(channel.sftp, "sftp", channel)
    bill = fetch_bill(endpoint, sftp, channel.name, day, rules.archive, force=force)
    return str(bill.path)


def normalize(rules: Rules, channel_name: str, day: dt.date, bill_path: str) -> str:
    """Parse and prove the bill (conservation, control totals); save the standard rows."""
    normalized = day_dir(rules, channel_name, day) / "normalized"
    what = f"{channel_name} {day}: parse bill"
    with stage(f"{what} {bill_path}"):
        bill = parse_bill(
            rules.channel(channel_name),
            Path(bill_path),
            work_dir=normalized / "incoming",
            what=what,
        )
    log.info(
        "%s %s: %s layout, %d rows parsed, %d quarantined",
        channel_name, day, bill.layout, bill.n_rows, bill.quarantine.height,
    )  # fmt: skip
    return str(save_parsed(bill, normalized))


def ledger_path(rules: Rules, channel_name: str, day: dt.date) -> Path:
    channel = rules.channel(channel_name)
    return _require(channel.ledger, "ledger", channel).for_day(
        day, rules.path.resolve().parent.parent
    )


def reconcile(rules: Rules, channel_name: str, day: dt.date, normalized_dir: str) -> str:
    bill = load_parsed(Path(normalized_dir))
    out = day_dir(rules, channel_name, day) / "queues"
    result = reconcile_parsed(
        rules, channel_name, day, bill, ledger_path(rules, channel_name, day), out
    )
    return str(result.out_dir)


def shard_inputs(
    rules: Rules, channel_name: str, day: dt.date, normalized_dir: str
) -> list[dict[str, str]]:
    """Load the ledger's day once and split both sides into the channel's hash shards;
    one dict of paths per shard, for the mapped diff tasks."""
    from recon.bill_io import load_ledger, save_ledger
    from recon.duck import work_connection
    from recon.pipeline import prepare
    from recon.shard import write_shards
    from recon.sides import bill_side_sql, ledger_side_sql

    channel = rules.channel(channel_name)
    bill = load_parsed(Path(normalized_dir))
    work = day_dir(rules, channel_name, day)
    prep = prepare(
        rules, channel_name, day, bill, ledger_path(rules, channel_name, day), work / "incoming"
    )
    ledger = save_ledger(prep.ledger, work / "ledger")
    con = work_connection(work / "duckdb", channel.scale.memory_limit)
    what = f"{channel_name} {day}: split into {channel.scale.shards} shards"
    try:
        with stage(what), duck_progress(con, what):
            shards = write_shards(
                ledger_side_sql(load_ledger(ledger).rows_files),
                bill_side_sql(bill.rows_files),
                channel.scale.shards,
                work / "shards",
                con,
            )
    finally:
        con.close()
    log.info("%s %s: %d shards of %d bill and %d ledger rows", channel_name, day,
             len(shards), bill.n_rows, prep.ledger.n_rows)  # fmt: skip
    return shards


def diff_shard(rules: Rules, channel_name: str, paths: dict[str, str]) -> str:
    """Diff one shard; its result's folder."""
    from recon.duck import work_connection
    from recon.shard import diff_shard as run
    from recon.shard import write_result

    channel = rules.channel(channel_name)
    con = work_connection(Path(paths["bill"]).parent / "duckdb", channel.scale.memory_limit)
    what = f"{channel_name} shard {paths['shard']}/{paths['k']}: diff"
    try:
        with stage(what), duck_progress(con, what):
            result = run(paths, channel.settled_statuses, con)
    finally:
        con.close()
    log.info("%s shard %s/%s: %s", channel_name, paths["shard"], paths["k"], result.counts)
    return write_result(result, Path(paths["bill"]).parent / "result")


def merge_shards(
    rules: Rules, channel_name: str, day: dt.date, normalized_dir: str, result_dirs: list[str]
) -> str:
    """Merge the shards' diffs and finish the run as if it had been diffed whole."""
    from recon.bill_io import load_ledger
    from recon.pipeline import Prepared, finish
    from recon.shard import merge_results, read_result

    work = day_dir(rules, channel_name, day)
    prep = Prepared(
        rules.channel(channel_name), day, load_parsed(Path(normalized_dir)),
        load_ledger(work / "ledger"), dt.datetime.now(dt.UTC), work,
    )  # fmt: skip
    merged = merge_results(read_result(d) for d in sorted(result_dirs))
    return str(finish(rules, prep, merged, work / "queues").out_dir)


def publish(rules: Rules, channel_name: str, day: dt.date, out_dir: str) -> dict[str, Any]:
    """Mark the channel-day reconciled and say where its queues are."""
    import json

    summary: dict[str, Any] = json.loads((Path(out_dir) / "summary.json").read_text("utf-8"))
    counts = {q: v["count"] for q, v in summary["queues"].items()}
    line = ", ".join(f"{q} {n}" for q, n in counts.items())
    with open_store(rules.store) as con:
        set_day_state(con, channel_name, day, "reconciled", line)
    log.info("%s %s: %s; queues in %s", channel_name, day, line, out_dir)
    report = str(Path(out_dir) / "report.html")
    return {
        "channel": channel_name,
        "date": day.isoformat(),
        "out_dir": out_dir,
        "report": report,
        **counts,
    }


def run_channel_day(
    rules: Rules,
    channel_name: str,
    day: dt.date,
    endpoint: SftpEndpoint,
    *,
    force: bool = False,
) -> RunResult:
    """The whole night for one channel-day, outside Airflow (one look for the bill)."""
    check_ready(
        endpoint,
        _require(rules.channel(channel_name).sftp, "sftp", rules.channel(channel_name)),
        day,
    )
    bill_path = download(rules, channel_name, day, endpoint, force=force)
    out = day_dir(rules, channel_name, day) / "queues"
    result = reconcile_day(
        rules, channel_name, day, Path(bill_path), ledger_path(rules, channel_name, day), out
    )
    publish(rules, channel_name, day, str(out))
    return result
