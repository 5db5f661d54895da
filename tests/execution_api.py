"""A real Airflow execution API server on 127.0.0.1, for DAG runs through an executor.

With ``use_executor=True`` dag.test() hands each task to the configured executor, whose
worker processes run it under the Task SDK supervisor; the supervisor talks to the
metadata DB only through the execution API. So a run on the LocalExecutor needs this
server, sharing the test's AIRFLOW_HOME (its SQLite metadata DB) and JWT secret.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.sshd import free_port

START_TIMEOUT = 60.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "health", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def execution_api(log_dir: Path) -> Iterator[str]:
    """Serve the execution API; sets, for the executor's workers, the environment that
    points them at it (URL and JWT secret). Yields the URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/execution/"
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = url
    # HS512 wants a key of 64 bytes or more.
    os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "api-server.log").open("wb")
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow), "api-server", "--apps", "execution", "-w", "1"]
    cmd += ["-H", "127.0.0.1", "-p", str(port)]
    # A session of its own: stopping it stops uvicorn's worker process too.
    server = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                text = (log_dir / "api-server.log").read_text(errors="replace")
                raise RuntimeError(f"execution API server did not start:\n{text[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
