"""Nightly reconciliation DAGs, one per channel in rules/ (RECON_RULES picks the deployment).

Configuration only: every step is a function in recon.nightly. Each run takes
the channel's previous business day (CronTriggerTimetable with a one-day data
interval in the channel's time zone) and passes paths, never data, via XCom.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import (
    DAG,
    Connection,
    CronTriggerTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    get_current_context,
    task,
)

from recon.channel_config import ScheduleRules
from recon.rules import Channel, Rules, load_rules

# Retrying cannot fix a wrong host key, refused credentials, a missed deadline or
# a bill that does not add up: fail those at once.
NO_RETRY = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception="recon.errors.PermanentFetchError", action=RetryAction.FAIL),
        RetryRule(exception="recon.errors.InputError", action=RetryAction.FAIL),
        RetryRule(exception="recon.errors.ConfigError", action=RetryAction.FAIL),
    ]
)


def _day(channel: Channel, ctx: Any = None) -> dt.date:
    """The business day of this run: the `business_date` param, else the day before."""
    from recon.nightly import business_day

    ctx = ctx or get_current_context()
    override = ctx["params"].get("business_date")
    if override:
        return dt.date.fromisoformat(str(override))
    end = ctx["data_interval_end"] or ctx["logical_date"]
    return business_day(end, channel.timezone)


def _endpoint(channel: Channel) -> Any:
    from recon.nightly import endpoint_from_connection

    assert channel.sftp is not None
    c = Connection.get(channel.sftp.conn_id)
    return endpoint_from_connection(c.host, c.port, c.login, c.password, c.extra_dejson)


def _on_failure(rules: Rules, channel: Channel) -> Any:
    def callback(context: Any) -> None:
        from recon.acquire import BillNotReady
        from recon.alerts import raise_alert
        from recon.nightly import BillMissingError, mark_bill_missing

        ti, exc, day = context["ti"], context.get("exception"), _day(channel, context)
        if isinstance(exc, BillMissingError):
            return  # recorded and alerted when the deadline passed
        if isinstance(exc, BillNotReady):  # retries ran out before the deadline
            mark_bill_missing(
                rules, channel.name, day, f"{exc} (gave up after try {ti.try_number})"
            )
        else:
            raise_alert(rules.store, channel.name, day, "task_failed", f"{ti.task_id}: {exc}")

    return callback


def build(rules: Rules, channel: Channel, schedule: ScheduleRules) -> DAG:
    name = channel.name
    with DAG(
        dag_id=f"recon_{name}",
        description=f"Fetch, normalize and reconcile the {name} bill of the previous day",
        schedule=CronTriggerTimetable(
            schedule.cron, timezone=channel.timezone, interval=dt.timedelta(days=1)
        ),
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["recon", name],
        params={
            "force_download": Param(False, type="boolean", description="fetch the bill again"),
            "business_date": Param(
                None, type=["null", "string"], description="YYYY-MM-DD: re-run this day instead"
            ),
        },
        default_args={"retry_policy": NO_RETRY, "on_failure_callback": _on_failure(rules, channel)},
    ) as dag:

        @task(
            retries=len(schedule.delays()),
            retry_delay=schedule.first_delay,
            retry_exponential_backoff=schedule.multiplier,
            max_retry_delay=schedule.max_delay,
        )
        def wait_for_bill() -> str:
            from recon.nightly import wait_for_bill as wait

            end = get_current_context()["data_interval_end"] or dt.datetime.now(dt.UTC)
            return wait(rules, name, _day(channel), _endpoint(channel), end + schedule.deadline)

        @task(retries=3, retry_delay=dt.timedelta(minutes=1))
        def download(remote: str) -> str:
            from recon.nightly import download as fetch

            force = bool(get_current_context()["params"].get("force_download"))
            return fetch(rules, name, _day(channel), _endpoint(channel), force=force)

        @task
        def normalize(bill_path: str) -> str:
            from recon.nightly import normalize as run

            return run(rules, name, _day(channel), bill_path)

        @task
        def reconcile(normalized_dir: str) -> str:
            from recon.nightly import reconcile as run

            return run(rules, name, _day(channel), normalized_dir)

        @task
        def shard(normalized_dir: str) -> list[dict[str, str]]:
            from recon.nightly import shard_inputs

            return shard_inputs(rules, name, _day(channel), normalized_dir)

        @task
        def diff_shard(paths: dict[str, str]) -> str:
            from recon.nightly import diff_shard as run

            return run(rules, name, paths)

        @task
        def merge(normalized_dir: str, results: list[str]) -> str:
            from recon.nightly import merge_shards

            return merge_shards(rules, name, _day(channel), normalized_dir, list(results))

        @task
        def publish(out_dir: str) -> dict[str, Any]:
            from recon.nightly import publish as run

            return run(rules, name, _day(channel), out_dir)

        # XComArgs stand in for the values at parse time: typed Any for the checker.
        remote: Any = wait_for_bill()
        bill_path: Any = download(remote)
        normalized: Any = normalize(bill_path)
        out_dir: Any
        if channel.scale.shards > 1:  # big days: one mapped task per hash shard of the key
            shards: Any = shard(normalized)
            results: Any = diff_shard.expand(paths=shards)
            out_dir = merge(normalized, results)
        else:
            out_dir = reconcile(normalized)
        publish(out_dir)
    return dag


RULES = load_rules()
for _channel in RULES.channels.values():
    if _channel.sftp and _channel.schedule and _channel.ledger:
        globals()[f"recon_{_channel.name}"] = build(RULES, _channel, _channel.schedule)
