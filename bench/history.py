"""How a run's checks across days grow with the bill rows the store keeps (bench/HISTORY.md).

``python -m bench.history --rows 10000000 --channel wechatpay --days 0 --days 10 --days 30``

A run reads earlier days' bill rows (the store's ``bill_rows``) for two checks: rows billed
again, and refunds over what was paid (recon.bill_history). The single-day benchmark
(bench.run) starts from an empty store, so it never shows that cost; this does. It parses
a generated day (``bench/work/<rows>/<channel>``, generated when missing) into its Parquet
parts once, then fills a fresh store with earlier days: the same rows under other order
ids, as other days' orders are (a refund's payment is not among them). At each
``--days``, for the day after them, it times (median of ``--repeat``): the look-up of the
earlier rows (one scan of the history), the two checks on what it found, and storing the
day (as a run does). The look-up keys are the day's refunded orders and 0.1% of its rows
as local-missing ones, as in bench.generate's days. It writes the table to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl

from bench.run import WORK, bill_of, generated, machine, versions
from parsers.base import ParsedBill
from recon import bill_history
from recon.parts import sql_source
from recon.pipeline import parse_bill
from recon.rules import load_rules
from recon.store import open_store, transaction

DAY = dt.date(2024, 3, 1)
OUT = Path(__file__).with_name("HISTORY.md")
MEMORY_LIMIT = "1GB"  # the default [channels.X.scale] memory_limit


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def day_folder(rows: int, channel: str) -> Path:
    """bench.run's folder of a generated day of ``rows`` (generated when missing)."""
    folder = WORK / str(rows) / channel
    if not generated(folder):
        from bench.generate import main as generate

        generate(["--rows", str(rows), "--channel", channel, "--out", str(folder)])
    return folder


def written_by(module: str, a: argparse.Namespace, days: list[int], more: str = "") -> str:
    """The results file's opening line: the command that wrote it, when, and the repeats."""
    flags = " ".join(f"--days {d}" for d in days)
    return (
        f"Written by `python -m {module} --rows {a.rows} --channel {a.channel} {flags}{more}` "
        f"on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (see its docstring); "
        f"medians of {a.repeat}."
    )


def _measure(
    con: duckdb.DuckDBPyConnection,
    channel: str,
    bill: ParsedBill,
    keys: pl.DataFrame,
    window: int,
    repeat: int,
) -> tuple[float, float, float]:
    """Seconds of the look-up, the checks and storing the day, for DAY with ``window``."""

    def look_up() -> None:
        with bill_history.looked_up(con, channel, DAY, window, bill, keys):
            pass

    def checks() -> None:
        with bill_history.looked_up(con, channel, DAY, window, bill, keys):
            started = time.perf_counter()
            bill_history.billed_before(con)
            bill_history.refunds_over_payments(con, bill)
            spent.append(time.perf_counter() - started)

    def store_day() -> None:
        with transaction(con):
            bill_history.store_day(con, channel, DAY, bill, window)
        con.execute("DELETE FROM bill_rows WHERE business_date = ?", [DAY])

    spent: list[float] = []  # the checks alone, each after a look-up of its own
    look = timed(look_up, repeat)
    timed(checks, repeat)
    return look, statistics.median(spent), timed(store_day, repeat)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="bill rows per day")
    ap.add_argument("--channel", choices=["wechatpay", "alipay"], default="wechatpay")
    ap.add_argument("--days", type=int, action="append", help="earlier days kept (repeatable)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    days = sorted(set(a.days or [0, 10, 30]))
    channel = load_rules().channel(a.channel)
    folder = day_folder(a.rows, a.channel)
    lines: list[str] = []
    points: list[tuple[int, float]] = []  # (rows stored, total seconds)
    with tempfile.TemporaryDirectory(prefix="bench-history-", dir=WORK) as tmp:
        work = Path(tmp)
        bill = parse_bill(channel, bill_of(folder, a.channel), work_dir=work / "bill")
        source = sql_source(bill.rows_files)
        lost = pl.scan_parquet(list(bill.rows_files)).filter(pl.col("source_line") % 1000 == 0)
        keys = lost.select("txn_type", "merchant_order_id", "merchant_refund_id").collect()
        store = work / "store.duckdb"
        with open_store(store, memory_limit=MEMORY_LIMIT, temp_dir=work / "spill") as con:
            kept = 0
            for target in days:
                for k in range(kept + 1, target + 1):
                    with transaction(con):
                        con.execute(
                            "INSERT INTO bill_rows (channel, business_date, txn_type, "
                            "merchant_order_id, merchant_refund_id, amount_minor) "
                            f"SELECT $channel, $day, txn_type, merchant_order_id || '-' || {k}, "
                            f"merchant_refund_id, amount_minor FROM {source}",
                            {"channel": a.channel, "day": DAY - dt.timedelta(days=k)},
                        )
                kept = target
                con.execute("CHECKPOINT")
                stored = con.execute("SELECT count(*) FROM bill_rows").fetchall()[0][0]
                size = store.stat().st_size / 2**30

                t_look, t_checks, t_store = _measure(
                    con, a.channel, bill, keys, target + 1, a.repeat
                )
                line = (
                    f"| {target} | {stored:,} | {size:.2f} | {t_look:.2f} | {t_checks:.2f} "
                    f"| {t_store:.2f} | {t_look + t_checks + t_store:.2f} |"
                )
                print(line, flush=True)
                lines.append(line)
                points.append((stored, t_look + t_checks + t_store))
    _write(a, days, lines, points)


def machine_lines(out: Path) -> list[str]:
    """The results file's closing section: the machine and the versions measured."""
    info = machine() | versions(out)
    return [
        "",
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in info.items() if not k.startswith("disk")),
        "",
    ]


def _write(
    a: argparse.Namespace, days: list[int], lines: list[str], points: list[tuple[int, float]]
) -> None:
    (rows0, s0), (rows1, s1) = points[0], points[-1]
    slope = []
    if rows1 - rows0 >= 10_000_000:  # less is within the noise
        per = (s1 - s0) / (rows1 - rows0) * 10_000_000
        slope = [
            "",
            f"Each further 10M rows kept adds about {per:.2f} s to a run (first and last line).",
        ]
    head = [
        "# recon: the checks across days against the history kept",
        "",
        written_by("bench.history", a, days)
        + f" A day has {a.rows:,} bill rows; the store's DuckDB is capped at {MEMORY_LIMIT}, "
        "as a run's is by default.",
        "",
        "- **look-up**: the earlier rows of the day's refunded and local-missing orders, in",
        "  one scan of every stored row of the channel in the window (recon.bill_history).",
        "- **checks**: rows billed again and refunds over payments, on what the look-up found.",
        "- **store**: the day's rows into bill_rows (and the rows before the window out).",
        "",
        "| earlier days kept | rows stored | store GiB | look-up s | checks s | store s "
        "| total s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *lines,
        *slope,
        *machine_lines(a.out),
    ]
    a.out.write_text("\n".join(head), encoding="utf-8")


if __name__ == "__main__":
    main()
