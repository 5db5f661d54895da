"""Time the stages of recon's path on one channel-day, in process (for finding hot spots).

``python -m bench.stages --channel wechatpay --dir bench/work/1000000/wechatpay``

Prints one line per stage (seconds) and, with ``--json``, writes them as JSON. The bill
parser is taken apart into its own steps, so a slow step shows by name. With
``--sides DIR`` it also writes the normalized sides (``ledger_side.parquet``,
``bill_side.parquet``) that bench.run's diff and datacompy runs start from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

from parsers import ParseContext, alipay, wechatpay
from parsers.common import read_bytes, read_lines, split_quarantine
from recon.engine import diff
from recon.ledger import load_ledger_day
from recon.queues import build_queues
from recon.rules import Channel, load_rules
from recon.sides import SIDE_SCHEMA, bill_side

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


def _ctx(channel: Channel) -> ParseContext:
    return ParseContext(
        channel=channel.name,
        timezone=channel.timezone,
        status_map=channel.status_map,
        default_currency=channel.currency,
    )


def parse_wechatpay(clock: Clock, path: Path, ctx: ParseContext) -> pl.DataFrame:
    w = wechatpay
    data = clock("read_bytes", lambda: read_bytes(path))
    lines = clock("decode+split_lines", lambda: read_lines(path, data))

    layout = w.detect_layout(path, lines.item(0, "text"))
    summary = clock("find_summary", lambda: w.find_summary(path, lines))
    in_body = pl.col("line").is_between(2, summary.header_line - 1)
    body = clock(
        "body_filter", lambda: lines.filter(in_body & (pl.col("text").str.strip_chars() != ""))
    )
    fields = clock("split_fields", lambda: w.split_fields(body, layout.columns))
    staged = clock("stage", lambda: w.stage(fields, layout, ctx, path))
    rows, _q = clock(
        "checks+validate", lambda: split_quarantine(staged, w.row_checks(layout), path)
    )
    totals = clock("control_totals", lambda: w.control_totals(summary, fields))
    assert all(t.ok for t in totals), totals
    return rows


def parse_alipay(clock: Clock, path: Path, ctx: ParseContext) -> pl.DataFrame:
    a = alipay
    source, raw = clock("read_bytes", lambda: a._load(path))
    lines = clock("decode+split_lines", lambda: read_lines(path, raw))

    header_line, columns = clock("header", lambda: a._header(source, lines))
    exponent = 2
    body = clock("body_filter", lambda: a._data_lines(lines, header_line))
    data = clock("split_fields", lambda: a._fields(body, columns))
    staged = clock("stage", lambda: a._stage(data, ctx, source, exponent))
    rows, _q = clock(
        "checks+validate", lambda: split_quarantine(staged, a._checks(len(columns)), path)
    )
    complete = data.filter((pl.col("_n") == len(columns)) & pl.col("_ok"))
    totals, _ = clock(
        "control_totals", lambda: a._totals(source, lines, header_line, complete, exponent)
    )
    assert all(t.ok for t in totals), totals
    return rows


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
    parse = parse_wechatpay if a.channel == "wechatpay" else parse_alipay
    rows = parse(clock, bill_path, _ctx(channel))
    ledger = clock(
        "load_ledger_day",
        lambda: load_ledger_day(ledger_path, channel.name, channel.timezone, a.date),
    )
    bside = clock("bill_side", lambda: bill_side(rows))
    lside = ledger.rows.select(list(SIDE_SCHEMA))
    result = clock("diff", lambda: diff(lside, bside, channel.settled_statuses))
    clock("build_queues", lambda: build_queues(result, channel.name, a.date))
    total = time.perf_counter() - started
    print(f"{'total':<28} {total:8.3f} s   counts {result.counts}")
    if a.json:
        times = {"total": total, **clock.times}
        a.json.write_text(json.dumps({"wall": times, "cpu": clock.cpu}, indent=2) + "\n")
    if a.sides:
        a.sides.mkdir(parents=True, exist_ok=True)
        lside.write_parquet(a.sides / "ledger_side.parquet")
        bside.write_parquet(a.sides / "bill_side.parquet")


if __name__ == "__main__":
    main()
