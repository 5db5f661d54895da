"""Run one DAG through the configured executor: ``python -m tests.executor_run DAG_ID``.

dag.test(use_executor=True) in a process of its own (see test_dags.py for why); the
environment (AIRFLOW_HOME, the executor, the execution API's URL and JWT secret, the
connections, RECON_RULES) comes from the caller. Prints one JSON line: the run's state,
this process's pid and each task instance's id, map index, state and pid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dag_id")
    ap.add_argument("--logical-date", type=dt.datetime.fromisoformat, required=True)
    ap.add_argument("--conf", type=json.loads, default=None)
    a = ap.parse_args()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    run = bag.dags[a.dag_id].test(logical_date=a.logical_date, run_conf=a.conf, use_executor=True)
    tasks = [
        {"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state), "pid": ti.pid}
        for ti in run.get_task_instances()
    ]
    print(json.dumps({"state": str(run.state), "driver_pid": os.getpid(), "tasks": tasks}))


if __name__ == "__main__":
    main()
