"""Time the stages of recon's path on one channel-day, in process (for finding hot spots).

``python -m bench.stages --channel wechatpay --dir bench/work/1000000/wechatpay``

Prints one line per stage (seconds) and, with ``--json``, writes them as JSON: parsing
and proving the bill (chunks in worker processes), loading the ledger's day, the diff
(DuckDB on the Parquet parts) and the queues. With ``--sides DIR`` it also writes the
normalized sides (``ledger_side.parquet``, ``bill_side.parquet``) that bench.run's diff
and datacompy runs start from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from recon.duck import work_connection
from recon.engine import diff
from recon.ledger import load_ledger_day
from recon.pipeline import parse_bill
from recon.queues import build_queues
from recon.rules import load_rules
from recon.sides import bill_side_sql, ledger_side_sql

T = TypeVar("T")


class Clock:
    """Wall and CPU seconds (all threads) per stage: CPU time is steadier on a busy machine."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        started, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - started
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
        print(f"{name:<28} {self.times[name]:8.3f} s wall {self.cpu[name]:8.3f} s cpu", flush=True)
        return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", required=True, choices=["wechatpay", "alipay"])
    ap.add_argument("--dir", type=Path, required=True, help="a bench.generate output folder")
    ap.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2024, 3, 1))
    ap.add_argument("--json", type=Path, help="write the stage times here")
    ap.add_argument("--sides", type=Path, help="write the normalized sides here")
    a = ap.parse_args(argv)
    channel = load_rules().channel(a.channel)
    bill_path = next(p for p in a.dir.iterdir() if p.name.startswith(a.channel + "_"))
    ledger_path = a.dir / f"ledger_{a.date:%Y%m%d}.csv"
    clock = Clock()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        work = Path(tmp)
        bill = clock("parse_bill", lambda: parse_bill(channel, bill_path, work_dir=work / "bill"))
        ledger = clock(
            "load_ledger_day",
            lambda: load_ledger_day(ledger_path, channel.name, channel.timezone, a.date, work),
        )
        con = work_connection(work / "duckdb", channel.scale.memory_limit)
        lside, bside = ledger_side_sql(ledger.rows_files), bill_side_sql(bill.rows_files)
        result = clock("diff", lambda: diff(lside, bside, channel.settled_statuses, con))
        clock("build_queues", lambda: build_queues(result, channel.name, a.date))
        total = time.perf_counter() - started
        print(f"{'total':<28} {total:8.3f} s   counts {result.counts}")
        if a.json:
            times = {"total": total, **clock.times}
            a.json.write_text(json.dumps({"wall": times, "cpu": clock.cpu}, indent=2) + "\n")
        if a.sides:
            a.sides.mkdir(parents=True, exist_ok=True)
            for name, query in (("ledger_side", lside), ("bill_side", bside)):
                target = str(a.sides / f"{name}.parquet").replace("'", "''")
                con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)")
        con.close()


if __name__ == "__main__":
    main()
