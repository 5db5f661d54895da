"""How a day's reports grow with the breaks the store holds (bench/REPORTS.md).

``python -m bench.reports --rows 10000000 --days 0 --days 90 --days 365``

Breaks are kept for good (they are the audit trail), and a day's reports read them: the
30-day trend and the open backlog as they stood at the day's end. The single-day benchmark
starts from an empty store; this does not. It runs ``recon run`` once on a generated day
(``bench/work/<rows>/<channel>``, generated when missing), takes that day's breaks, queue
rows, audit entries and run as a template, and copies them onto earlier days, one copy a
day (other order ids). A share of each earlier day's breaks (``--closed``, 0.95 by default)
is closed two days after its business day, with its audit entry, as timing differences
and analysts close them. At each ``--days`` it times writing the day's reports
(report.html and queues.xlsx, recon.report_data.write_reports), median of ``--repeat``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

import duckdb

from bench.history import DAY, day_folder, machine_lines, timed, written_by
from bench.run import WORK, bill_of
from recon.cli import main as recon
from recon.report_data import write_reports
from recon.rules import load_rules
from recon.store import CLOSED_STATES, open_store

OUT = Path(__file__).with_name("REPORTS.md")

# The day's rows of each table, copied onto day -k: ids, order ids and times moved with it.
_COPY = {
    "break_items": """
      INSERT INTO break_items SELECT * REPLACE (
        break_id + $k * $span AS break_id, merchant_order_id || '-' || $k AS merchant_order_id,
        business_date - $k AS business_date, first_seen - $k AS first_seen,
        last_seen - $k AS last_seen, updated_at - to_days($k) AS updated_at)
      FROM day.break_items""",
    "audit_log": """
      INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state, note)
      SELECT logged_at - to_days($k), actor, break_id + $k * $span, action, from_state,
        to_state, note
      FROM day.audit_log""",
    "queue_items": """
      INSERT INTO queue_items SELECT * REPLACE (
        run_id || '-' || $k AS run_id, business_date - $k AS business_date,
        merchant_order_id || '-' || $k AS merchant_order_id)
      FROM day.queue_items""",
    "runs": """
      INSERT INTO runs SELECT * REPLACE (
        run_id || '-' || $k AS run_id, business_date - $k AS business_date,
        started_at - to_days($k) AS started_at, finished_at - to_days($k) AS finished_at)
      FROM day.runs""",
}
# A share of day -k's breaks closed two days after their business day, audited.
_CLOSE = """
  INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state, note)
  SELECT CAST(business_date + 2 AS TIMESTAMPTZ), 'bench', break_id, 'resolve', state,
    'resolved', 'bench.reports'
  FROM break_items WHERE business_date = $day AND hash(break_id) % 1000 < $per_mille;
  UPDATE break_items SET state = 'resolved', updated_at = CAST(business_date + 2 AS TIMESTAMPTZ)
  WHERE business_date = $day AND hash(break_id) % 1000 < $per_mille;
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="bill rows of the day")
    ap.add_argument("--channel", choices=["wechatpay", "alipay"], default="wechatpay")
    ap.add_argument("--days", type=int, action="append", help="earlier days of breaks")
    ap.add_argument("--closed", type=float, default=0.95, help="share of them closed")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    days = sorted(set(a.days or [0, 30, 90]))
    tz = load_rules().channel(a.channel).timezone
    folder = day_folder(a.rows, a.channel)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-reports-", dir=WORK) as tmp:
        work = Path(tmp)
        day_store, store = work / "day.duckdb", work / "store.duckdb"
        ledger = folder / f"ledger_{DAY:%Y%m%d}.csv"
        recon(
            ["-q", "run", "--channel", a.channel, "--date", DAY.isoformat(), "--bill",
             str(bill_of(folder, a.channel)), "--ledger", str(ledger), "--out",
             str(work / "out"), "--store", str(day_store)]
        )  # fmt: skip
        with open_store(store):  # the schema
            pass
        kept = -1  # the day itself is copied first, as day -0
        for target in days:
            with duckdb.connect(str(store)) as con:
                con.execute(f"ATTACH '{day_store}' AS day (READ_ONLY)")
                span = con.execute("SELECT max(break_id) + 1 FROM day.break_items").fetchall()
                for k in range(kept + 1, target + 1):
                    _copy_day(con, k, int(span[0][0]), a.closed if k else 0.0)
                kept = target
                con.execute("CHECKPOINT")
                breaks, closed = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE list_contains(?, state)) "
                    "FROM break_items",
                    [list(CLOSED_STATES)],
                ).fetchall()[0]
            seconds = timed(
                lambda: write_reports(store, a.channel, DAY, work / "reports", tz=tz), a.repeat
            )
            size = store.stat().st_size / 2**30
            line = f"| {target} | {breaks:,} | {closed:,} | {size:.2f} | {seconds:.2f} |"
            print(line, flush=True)
            lines.append(line)
    _write(a, days, lines)


def _copy_day(con: duckdb.DuckDBPyConnection, k: int, span: int, closed: float) -> None:
    con.execute("BEGIN")
    for sql in _COPY.values():
        con.execute(sql, {n: v for n, v in (("k", k), ("span", span)) if f"${n}" in sql})
    day = DAY - dt.timedelta(days=k)
    for statement in _CLOSE.strip().split(";"):
        if statement.strip():
            con.execute(statement, {"day": day, "per_mille": round(closed * 1000)})
    con.execute("COMMIT")


def _write(a: argparse.Namespace, days: list[int], lines: list[str]) -> None:
    text = [
        "# recon: a day's reports against the breaks the store holds",
        "",
        written_by("bench.reports", a, days, f" --closed {a.closed}")
        + f" Each earlier day holds a copy of the breaks of a {a.rows:,}-row day, "
        f"{a.closed:.0%} of them closed two days after their business day.",
        "",
        "| earlier days | breaks | closed | store GiB | reports s |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *lines,
        *machine_lines(a.out),
    ]
    a.out.write_text("\n".join(text), encoding="utf-8")


if __name__ == "__main__":
    main()
