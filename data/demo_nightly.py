"""The README's main job: run each channel's nightly DAG on a generated day.

Bills are served by the embedded SFTP channel simulator on 127.0.0.1; the
Alipay bill is published late, so its wait_for_bill task polls several times
with growing intervals before the bill is there. Airflow runs for real
(``dag.test()``) on a SQLite metadata DB under var/airflow.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LATE_SECONDS = 9.0  # the Alipay bill shows up this long after the run starts


def airflow_env(home: Path, rules: Path) -> None:
    """Must run before Airflow is imported."""
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["RECON_RULES"] = str(rules)
    home.mkdir(parents=True, exist_ok=True)


def connection_env(
    conn_id: str, host: str, port: int, login: str, password: str, host_key: str
) -> None:
    """An Airflow connection given the documented way, through AIRFLOW_CONN_<ID>."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {
            "conn_type": "sftp",
            "host": host,
            "port": port,
            "login": login,
            "password": password,
            "extra": {"host_key": host_key},
        }
    )


def tries(dag_id: str, run_id: str, task_id: str) -> list[tuple[int, dt.datetime, str]]:
    """(try number, start, state) of every try of a task in a run, oldest first."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    out: list[tuple[int, dt.datetime, str]] = []
    with create_session() as s:
        models: list[Any] = [TaskInstanceHistory, TaskInstance]
        for model in models:
            rows = s.query(model).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id).all()
            out += [(r.try_number, r.start_date, str(r.state)) for r in rows if r.start_date]
    return sorted(set(out))


def run_dag(dag_id: str, logical_date: dt.datetime) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag.dags[dag_id].test(logical_date=logical_date)


def main() -> int:
    var = REPO / "var"
    airflow_env(var / "airflow", REPO / "rules" / "demo.toml")
    logging.basicConfig(level=logging.WARNING)

    from airflow.utils import db

    from data.generate import alipay_bill, alipay_zip, generate, wechat_bill, write_ledger
    from data.sftp_simulator import ChannelSimulator
    from recon.nightly import business_day, day_dir
    from recon.rules import load_rules

    rules = load_rules()
    now = dt.datetime.now(dt.UTC)
    day = business_day(now, "Asia/Shanghai")  # the run scheduled now takes yesterday
    demo = var / "demo"
    served, staging = demo / "served", demo / "staging"
    shutil.rmtree(served, ignore_errors=True)  # a fresh night: no bills on the server yet
    for d in (served, staging):
        d.mkdir(parents=True, exist_ok=True)
    generated = generate(day, 400, seed=7)
    ledger = rules.channel("wechatpay").ledger
    assert ledger is not None
    ledger_file = ledger.for_day(day, REPO)
    ledger_file.parent.mkdir(parents=True, exist_ok=True)
    write_ledger(generated.ledger, ledger_file)
    bills = {
        "wechatpay": wechat_bill(generated.bills["wechatpay"]).encode("utf-8"),
        "alipay": alipay_zip(alipay_bill(generated.bills["alipay"], day), day),
    }

    print(f"migrating the Airflow metadata DB under {var / 'airflow'} ...", flush=True)
    db.initdb()
    password = secrets.token_urlsafe(16)
    sim = ChannelSimulator(served, password=password)
    with sim as addr:
        host_key = addr.host_key_line.split(maxsplit=1)[1]
        print(f"SFTP channel simulator on {addr.host}:{addr.port}; business day {day}", flush=True)
        for channel, late in (("wechatpay", 0.0), ("alipay", LATE_SECONDS)):
            sftp = rules.channel(channel).sftp
            assert sftp is not None
            connection_env(sftp.conn_id, addr.host, addr.port, addr.username, password, host_key)
            name = sftp.remote_name(day)
            (staging / name).write_bytes(bills[channel])
            remote = f"{sftp.remote_dir.strip('/')}/{name}"
            sim.publish(staging / name, remote, after=late)
            if sftp.completeness == "marker":  # the channel drops the marker once the zip is whole
                (staging / "marker").write_bytes(b"")
                sim.publish(staging / "marker", remote + sftp.marker_suffix, after=late + 0.5)
            when = f"in {late:.0f}s: it is late" if late else "now"
            print(f"{channel}: the channel publishes /{remote} {when}", flush=True)
            dag_id = f"recon_{channel}"
            print(f"running {dag_id} (dag.test) ...", flush=True)
            run = run_dag(dag_id, now)
            polls = tries(dag_id, run.run_id, "wait_for_bill")
            start = polls[0][1]
            gaps = [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(polls)]
            for (n, at, state), gap in zip(polls, [0.0, *gaps], strict=True):
                seen = "bill complete" if state == "success" else "not there yet, retry later"
                print(f"  wait_for_bill try {n} at +{(at - start).total_seconds():5.1f}s "
                      f"({gap:4.1f}s after the previous try): {seen}")  # fmt: skip
            print(f"  {dag_id}: {run.state}", flush=True)
            if str(run.state) != "success":
                return 1
    print()
    for channel in ("wechatpay", "alipay"):
        out = day_dir(rules, channel, day) / "queues"
        summary = json.loads((out / "summary.json").read_text("utf-8"))
        counts = ", ".join(f"{q} {v['count']}" for q, v in summary["queues"].items())
        print(f"{channel} {day}: matched {summary['matched']}, {counts}")
        print(f"  queues and summary.json: {out}")
        print(f"  report: {out / 'report.html'}  workbook: {out / 'queues.xlsx'}")
    print(f"store: {rules.store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
