"""The nightly DAGs under real Airflow (dag.test()) against a real OpenSSH sshd.

The sshd runs on 127.0.0.1 with a temporary host key and client key
(tests/sshd.py); bills are written into the directories it serves, on time or
late from a timer thread. The Airflow metadata DB is a SQLite file in a temp dir.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from data.demo_nightly import REPO, airflow_env, tries
from data.generate import alipay_bill, alipay_zip, generate, wechat_bill, write_ledger
from recon import progress
from tests.sshd import SSHD, SshServer, start_sshd

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.sshd,
    pytest.mark.skipif(
        not SSHD.exists(), reason="needs OpenSSH sshd (apt-get install openssh-server)"
    ),
]

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = (NOW.astimezone(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(days=1)).date()


@dataclass
class Env:
    root: Path
    sshd: SshServer
    timers: list[threading.Timer]

    @property
    def served(self) -> Path:
        return self.sshd.root / "bills"

    def rules(
        self,
        *,
        first_delay: str = "1s",
        multiplier: float = 2.0,
        deadline: str = "2m",
        shards: int = 1,
    ) -> Path:
        """A deployment rules file in the temp dir; RECON_RULES points the DAGs at it."""
        text = (REPO / "rules" / "demo.toml").read_text("utf-8")
        text = re.sub(r'first_delay = "[^"]+"', f'first_delay = "{first_delay}"', text)
        text = re.sub(r"multiplier = [0-9.]+", f"multiplier = {multiplier}", text)
        text = re.sub(r'deadline = "[^"]+"', f'deadline = "{deadline}"', text)
        text = text.replace('"var/demo/', f'"{self.root}/')
        text = text.replace('remote_dir = "/bills/', f'remote_dir = "{self.served}/')
        if shards > 1:
            text += f"\n[channels.wechatpay.scale]\nshards = {shards}\n"
        path = self.root / f"rules_{first_delay}_{multiplier}_{deadline}_{shards}.toml"
        path.write_text(text, "utf-8")
        os.environ["RECON_RULES"] = str(path)
        return path

    def connect(self, host_key: str | None = None) -> None:
        """The Airflow connections, given through AIRFLOW_CONN_<ID> as in production."""
        e = self.sshd.endpoint
        extra = {"key_file": str(e.key_file), "host_key": host_key or self.sshd.host_key_line}
        for conn_id in ("sftp_wechatpay", "sftp_alipay"):
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {
                    "conn_type": "sftp",
                    "host": e.host,
                    "port": e.port,
                    "login": e.username,
                    "extra": extra,
                }
            )

    def deliver(self, data: bytes, name: str, after: float) -> None:
        """Put a file on the server whole (write aside, then rename), now or later."""
        dest = self.served / name
        dest.parent.mkdir(parents=True, exist_ok=True)

        def land() -> None:
            tmp = dest.with_name("." + dest.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)

        if after <= 0:
            land()
            return
        timer = threading.Timer(after, land)
        timer.daemon = True
        timer.start()
        self.timers.append(timer)

    def publish(self, channel: str, *, after: float = 0.0) -> None:
        day = generate(DAY, 120, seed=3)
        ledger = self.root / "ledger" / f"ledger_{DAY:%Y%m%d}.csv"
        ledger.parent.mkdir(exist_ok=True)
        write_ledger(day.ledger, ledger)
        if channel == "wechatpay":
            bill = wechat_bill(day.bills["wechatpay"]).encode("utf-8")
            self.deliver(bill, f"wechatpay/wechatpay_{DAY:%Y%m%d}_ALL.csv", after)
        else:
            name = f"alipay/alipay_{DAY:%Y%m%d}.csv.zip"
            self.deliver(alipay_zip(alipay_bill(day.bills["alipay"], DAY), DAY), name, after)
            self.deliver(b"", name + ".ok", after + 0.2)  # the marker comes last


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("nightly")
    saved = dict(os.environ)
    airflow_env(root / "airflow", REPO / "rules" / "demo.toml")
    from airflow.utils import db

    db.initdb()
    (root / "sshd").mkdir()
    server = start_sshd(root / "sshd")
    e = Env(root, server, [])
    try:
        e.connect()
        yield e
    finally:
        for t in e.timers:
            t.cancel()
        server.stop()
        os.environ.clear()
        os.environ.update(saved)


def run(dag_id: str, **conf: Any) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags[dag_id].test(logical_date=NOW, run_conf=conf or None)


def store_rows(env: Env, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(env.root / "recon.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(args)).fetchall()
    finally:
        con.close()


def test_every_channel_dag_imports_and_is_configuration_only(env: Env) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import CronTriggerTimetable

    env.rules(first_delay="5s", multiplier=3.0)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dags) == {"recon_wechatpay", "recon_alipay"}
    for dag in bag.dags.values():
        assert [t.task_id for t in dag.topological_sort()] == [  # type: ignore[no-untyped-call]
            "wait_for_bill", "download", "normalize", "reconcile", "publish",
        ]  # fmt: skip
        assert isinstance(dag.timetable, CronTriggerTimetable)
        assert dag.timetable.interval == dt.timedelta(days=1)
        assert dag.catchup is False
        wait = dag.get_task("wait_for_bill")
        assert wait.retry_delay == dt.timedelta(seconds=5)
        assert wait.retry_exponential_backoff == 3.0
        assert wait.max_retry_delay == dt.timedelta(seconds=30)
        assert (wait.retries or 0) >= 4


def test_dag_file_does_no_heavy_work_at_import() -> None:
    probe = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('polars', 'duckdb', 'paramiko', 'pandera', 'pyarrow') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags" / "recon_nightly.py")],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
    )  # fmt: skip
    assert out.stdout.strip() == ""


def test_full_run_then_the_same_day_again_gives_the_same_results(env: Env) -> None:
    env.rules()
    env.publish("wechatpay")
    first = run("recon_wechatpay")
    assert str(first.state) == "success"
    out = env.root / "runs" / "wechatpay" / DAY.isoformat() / "queues"
    queues = {
        f: (out / f).read_bytes()
        for f in ("local_missing.csv", "channel_missing.csv", "field_mismatch.csv")
    }
    assert all(queues.values())
    items = store_rows(env, "SELECT queue, count(*) FROM queue_items GROUP BY ALL ORDER BY ALL")
    assert {q for q, _ in items} == {"local_missing", "channel_missing", "field_mismatch"}

    again = run("recon_wechatpay", force_download=True)
    assert str(again.state) == "success"
    assert {f: (out / f).read_bytes() for f in queues} == queues
    assert (
        store_rows(env, "SELECT queue, count(*) FROM queue_items GROUP BY ALL ORDER BY ALL")
        == items
    )
    assert store_rows(env, "SELECT count(*) FROM runs WHERE channel = 'wechatpay'") == [(2,)]
    day_dir = env.root / "archive" / "wechatpay" / DAY.isoformat()
    assert [p.name for p in day_dir.rglob("*.csv")] == [f"wechatpay_{DAY:%Y%m%d}_ALL.csv"]
    assert store_rows(env, "SELECT state FROM channel_days WHERE channel = 'wechatpay'") == [
        ("reconciled",)
    ]


def test_task_logs_show_the_stages_and_how_far_they_got(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What the tasks log (Airflow keeps it as the task's log) includes recon's progress."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # every report is due
    env.rules()
    env.publish("wechatpay")
    with caplog.at_level(logging.INFO, logger="recon.progress"):
        assert str(run("recon_wechatpay", force_download=True).state) == "success"
    logged = "\n".join(caplog.messages)
    name = f"wechatpay_{DAY:%Y%m%d}_ALL.csv"
    assert re.search(rf"wechatpay {DAY}: parse bill: [0-9,]+ rows read \(", logged), logged
    assert re.search(rf"wechatpay {DAY}: parse bill \S+/{name}: done in", logged), logged
    assert re.search(rf"wechatpay {DAY}: load ledger: [0-9,]+ rows read", logged), logged
    assert re.search(rf"wechatpay {DAY}: update breaks: done in [0-9.]+ s", logged), logged


def test_late_bill_is_polled_with_growing_intervals(env: Env) -> None:
    env.rules(first_delay="2s", multiplier=3.0)
    env.publish("alipay", after=9.0)
    dag_run = run("recon_alipay")
    assert str(dag_run.state) == "success"
    polls = tries("recon_alipay", dag_run.run_id, "wait_for_bill")
    assert len(polls) >= 3
    gaps = [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(polls)]
    assert gaps == sorted(gaps)
    assert gaps[0] >= 2
    assert gaps[1] >= 6  # 2s * 3, Airflow adds up to 2x jitter on top
    assert (env.root / "runs" / "alipay" / DAY.isoformat() / "queues" / "summary.json").exists()


def test_bill_that_never_comes_goes_to_manual_handling_with_an_alert(env: Env) -> None:
    for old in env.served.rglob("*"):
        if old.is_file():
            old.unlink()
    env.rules(first_delay="1s", deadline="3s")
    out = env.root / "runs" / "wechatpay" / DAY.isoformat()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    start = dt.datetime.now(dt.UTC)
    # The deadline counts from the run's scheduled time: schedule it now.
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["recon_wechatpay"]
    dag_run = dag.test(logical_date=start)
    assert str(dag_run.state) == "failed"
    assert store_rows(
        env, "SELECT state FROM channel_days WHERE channel = 'wechatpay' AND business_date = ?",
        (start.astimezone(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(days=1)).date(),
    ) == [("bill_missing_manual",)]  # fmt: skip
    alerts = store_rows(env, "SELECT kind, message FROM alerts WHERE raised_at >= ?", start)
    assert [k for k, _ in alerts] == ["bill_missing_manual"]
    assert "not delivered" in alerts[0][1]
    assert not (out / "queues").exists()  # nothing reconciled
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["reconcile"] == "upstream_failed"


def test_wrong_host_key_fails_at_once_without_retry(env: Env) -> None:
    env.rules(first_delay="1s")
    impostor = env.sshd.keygen(env.root / "impostor").split()
    env.connect(host_key=f"{impostor[0]} {impostor[1]}")
    try:
        dag_run = run("recon_alipay", business_date="2024-01-05")
    finally:
        env.connect()
    assert str(dag_run.state) == "failed"
    polls = tries("recon_alipay", dag_run.run_id, "wait_for_bill")
    assert len(polls) == 1
    alerts = store_rows(
        env, "SELECT kind, message FROM alerts WHERE business_date = DATE '2024-01-05'"
    )
    assert [k for k, _ in alerts] == ["task_failed"]
    assert "host key" in alerts[0][1].lower()


QUEUE_FILES = ("local_missing.csv", "channel_missing.csv", "field_mismatch.csv", "quarantine.csv")


def whole_run_queues(env: Env) -> dict[str, bytes]:
    """The queue files of an unsharded run of the day, then removed: a run after it
    must write them all again."""
    env.rules()
    env.publish("wechatpay")
    assert str(run("recon_wechatpay", force_download=True).state) == "success"
    out = queues_dir(env)
    expected = {f: (out / f).read_bytes() for f in QUEUE_FILES}
    for f in QUEUE_FILES:
        (out / f).unlink()
    return expected


def queues_dir(env: Env) -> Path:
    return env.root / "runs" / "wechatpay" / DAY.isoformat() / "queues"


def test_sharded_run_gives_the_same_queues_as_the_whole_run(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    expected = whole_run_queues(env)
    env.rules(shards=3)
    with caplog.at_level(logging.INFO, logger="recon.progress"):
        sharded = run("recon_wechatpay", force_download=True)
    assert str(sharded.state) == "success"
    mapped = [ti for ti in sharded.get_task_instances() if ti.task_id == "diff_shard"]
    assert sorted(ti.map_index for ti in mapped) == [0, 1, 2]
    assert all(str(ti.state) == "success" for ti in mapped)
    assert {f: (queues_dir(env) / f).read_bytes() for f in QUEUE_FILES} == expected
    # Each mapped task logs its stage, as the unsharded run's tasks do.
    done = [m for m in caplog.messages if ": done in " in m]
    for i in range(3):
        assert any(m.startswith(f"wechatpay shard {i}/3: diff: done in") for m in done), done
    assert any(m.startswith(f"wechatpay {DAY}: split into 3 shards: done in") for m in done)


def test_sharded_run_on_the_local_executor_gives_the_same_queues(env: Env) -> None:
    """Every task in its own process, as on Celery or Kubernetes workers: LocalExecutor
    workers run them under the Task SDK supervisor, which reaches the metadata DB only
    through a real execution API server. The tasks share nothing but paths."""
    from tests.execution_api import execution_api

    expected = whole_run_queues(env)
    env.rules(shards=3)
    with execution_api(env.root / "api"):
        # A fresh process drives the run: LocalExecutor forks its workers, and a fork
        # of this one (where polars has run) would inherit polars' threads half-alive.
        # The scheduler that forks them in production never loads polars either.
        cmd = [sys.executable, "-m", "tests.executor_run", "recon_wechatpay"]
        cmd += ["--logical-date", NOW.isoformat(), "--conf", json.dumps({"force_download": True})]
        # Four worker processes are enough for the three shards (the default is 32).
        env_vars = {
            **os.environ,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
        }
        stdout, stderr = _run_group(cmd, env_vars, timeout=600)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["state"] == "success", stderr[-3000:]
    mapped = [t for t in result["tasks"] if t["task_id"] == "diff_shard"]
    assert sorted(t["map_index"] for t in mapped) == [0, 1, 2]
    assert all(t["state"] == "success" for t in mapped)
    # Each task ran in a process of its own, none in the process driving the run.
    pids = [t["pid"] for t in result["tasks"]]
    assert None not in pids
    assert len(set(pids)) == len(pids) == 9
    assert result["driver_pid"] not in pids
    assert {f: (queues_dir(env) / f).read_bytes() for f in QUEUE_FILES} == expected


def _run_group(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, str]:
    """Run ``cmd`` in a session of its own and return its output; on a timeout or a
    failure the whole group goes (executor workers included), so nothing is left behind."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(cmd[1:4])} still running after {timeout} s:\n{stderr[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr
