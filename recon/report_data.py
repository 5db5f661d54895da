"""The figures of one channel-day's analyst reports, read from the store.

Breaks are shown as they stood at the end of the report's day ("as of"):

- a break belongs to its ``business_date`` and is open at day X when its business date is
  on or before X and it was not closed by then (``first_seen`` is not used: a break found
  late restates the days it belongs to, as books are restated);
- a break is closed on the *store's business day* at the time it was closed: the latest
  business date of this channel's runs started before the closing event in the audit log
  (so the nightly run of day D, which runs after midnight, closes on D), or, before any
  run, the closing event's local date in ``tz``;
- a break closed after the report's day is shown in the state it was closed from.

The 30-day trend applies the same rule to each day of the window, so it is the open backlog
(count and amount) at the end of each day, not the breaks raised that day.

Bounded at any size: every figure is an aggregate computed by DuckDB; the only rows read
are the open breaks largest first and each queue's first rows, both at most ``sheet_rows``
(``SHEET_ROWS``, the rows a sheet of queues.xlsx shows). The store's ``bill_rows`` (every
bill row of the days kept, recon.bill_history) is never read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recon.currency import CURRENCY_EXPONENTS
from recon.duck import one_row
from recon.masking import is_personal, mask
from recon.money import exponent_expr, format_minor, format_minor_expr
from recon.queues import QUEUES
from recon.store import BREAK_STATES, CLOSED_STATES, open_store

# Labels shown beside the English names in both reports.
QUEUE_LABELS = {
    "local_missing": "本地丢失",
    "channel_missing": "渠道丢失",
    "field_mismatch": "数据差错",
}
QUEUE_TITLES = {"local_missing": "Local missing", "channel_missing": "Channel missing",
                "field_mismatch": "Field mismatch"}  # fmt: skip
KIND_LABELS = QUEUE_LABELS | {"fee_mismatch": "手续费差错", "refund_exceeds_payment": "超额退款",
                              "duplicate_payment": "重复支付", "duplicate_refund": "重复退款"}  # fmt: skip
STATE_LABELS = {"open": "未处理", "pending_timing": "时间差待平", "auto_resolved": "自动平账",
                "resolved": "已解决", "written_off": "已核销"}  # fmt: skip
# The open-break listing's columns (BreakRow fields) and headers.
BREAK_COLUMNS = (
    ("break_id", "Break 编号"), ("kind", "Kind 类型"), ("state", "State 状态"),
    ("business_date", "Business date 账单日期"), ("age_days", "Age 账龄"),
    ("txn_type", "Type 交易类型"), ("merchant_order_id", "Order id 商户订单号"),
    ("merchant_refund_id", "Refund id 商户退款单号"), ("channel_txn_id", "Channel txn id 渠道交易号"),
    ("field", "Field 字段"), ("ledger_value", "Ledger 账务值"), ("channel_value", "Channel 渠道值"),
    ("assignee", "Assignee 处理人"),
)  # fmt: skip
AGING = (("0-1", 0, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8-30", 8, 30), (">30", 31, None))
TREND_DAYS = 30
# Rows of a queue, and open breaks, that queues.xlsx shows (Excel's own limit is 1,048,576 rows
# a sheet). Longer queues are in full in the run's <queue>.csv / <queue>.parquet.
SHEET_ROWS = 100_000
# DuckDB's memory while it reports (the break history of a channel can be long): beyond it,
# it spills to the store's temporary directory.
REPORT_MEMORY_LIMIT = "512MB"
_MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*(MB|GB|MiB|GiB)$")


@dataclass(frozen=True)
class Money:
    minor: int
    currency: str

    @property
    def text(self) -> str:
        return format_minor(self.minor, self.currency)

    @property
    def major(self) -> Decimal:
        return Decimal(self.minor).scaleb(-CURRENCY_EXPONENTS.get(self.currency, 2))


@dataclass(frozen=True)
class Tally:
    count: int
    amounts: tuple[Money, ...]  # one per currency, sorted by currency


@dataclass(frozen=True)
class QueueTally:
    queue: str
    rows: int  # field_mismatch has one row per differing field
    records: int  # distinct bill/ledger records; amounts are summed over these
    amounts: tuple[Money, ...]


@dataclass(frozen=True)
class BreakTally:
    kind: str
    state: str
    tally: Tally


@dataclass(frozen=True)
class AgingBucket:
    label: str
    tally: Tally


@dataclass(frozen=True)
class TrendPoint:
    day: dt.date
    tally: Tally


@dataclass(frozen=True)
class MatchRate:
    matched: int
    bill_rows: int
    ledger_rows: int

    @property
    def percent(self) -> str:
        if not self.bill_rows:
            return "n/a"
        rate = Decimal(100 * self.matched) / Decimal(self.bill_rows)
        return f"{rate.quantize(Decimal('0.01'))}%"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: dt.datetime
    exit_code: int | None
    bill_file: str
    ledger_file: str
    quarantined: int


@dataclass(frozen=True)
class BreakRow:
    break_id: int
    kind: str
    state: str  # as of the report's day
    business_date: dt.date
    age_days: int
    txn_type: str
    merchant_order_id: str
    merchant_refund_id: str
    channel_txn_id: str
    field: str
    amount: Money | None
    ledger_value: str  # masked when the field is personal
    channel_value: str
    assignee: str
    personal: tuple[tuple[str, str], ...]  # further personal columns of the store, masked


# The open-break listing as a frame (ReportData.open_rows): BREAK_COLUMNS with ``state`` as of
# the day, then the money, then any personal columns of the store; personal data masked.
BREAK_FRAME_SCHEMA = {
    c: {"break_id": pl.Int64, "business_date": pl.Date, "age_days": pl.Int64}.get(c, pl.String)
    for c, _ in BREAK_COLUMNS
} | {"amount_minor": pl.Int64, "currency": pl.String}


@dataclass(frozen=True)
class ReportData:
    channel: str
    day: dt.date
    generated_at: dt.datetime
    run: RunInfo | None
    match: MatchRate | None
    queues: tuple[QueueTally, ...]
    breaks: tuple[BreakTally, ...]  # open at the day's end, or closed on the day
    aging: tuple[AgingBucket, ...]  # open breaks by age (day - business_date)
    trend: tuple[TrendPoint, ...]  # oldest first, ending on the day
    open_count: int  # open breaks at the day's end
    # The largest open breaks, largest first, at most max(sheet_rows, top) of them
    # (BREAK_FRAME_SCHEMA, then personal columns, masked): the workbook lists the first
    # sheet_rows, the HTML the first ``top``.
    open_rows: pl.DataFrame = dataclasses.field(compare=False, repr=False)
    top: int = 20
    sheet_rows: int = SHEET_ROWS

    @property
    def largest(self) -> tuple[BreakRow, ...]:
        return break_rows(self.open_rows.head(self.top))

    @cached_property
    def open_breaks(self) -> tuple[BreakRow, ...]:
        """Every row of ``open_rows`` as a BreakRow (the writers use the frame)."""
        return break_rows(self.open_rows)

    @property
    def sheet_rows_of(self) -> dict[str, tuple[int, int]]:
        """Queue -> (rows its sheet of queues.xlsx shows, rows of the queue)."""
        return {q.queue: (min(q.rows, self.sheet_rows), q.rows) for q in self.queues}

    @property
    def personal_columns(self) -> list[str]:
        """The store's further personal columns in ``open_rows``."""
        return [c for c in self.open_rows.columns if c not in BREAK_FRAME_SCHEMA]


def break_rows(df: pl.DataFrame) -> tuple[BreakRow, ...]:
    personal = [c for c in df.columns if c not in BREAK_FRAME_SCHEMA]
    return tuple(
        BreakRow(
            break_id=r["break_id"],
            kind=r["kind"],
            state=r["state"],
            business_date=r["business_date"],
            age_days=r["age_days"],
            txn_type=r["txn_type"],
            merchant_order_id=r["merchant_order_id"],
            merchant_refund_id=r["merchant_refund_id"],
            channel_txn_id=r["channel_txn_id"],
            field=r["field"],
            amount=Money(r["amount_minor"], r["currency"])
            if r["amount_minor"] is not None and r["currency"]
            else None,
            ledger_value=r["ledger_value"],
            channel_value=r["channel_value"],
            assignee=r["assignee"],
            personal=tuple((c, r[c]) for c in personal if r[c] is not None),
        )
        for r in df.iter_rows(named=True)
    )


# The breaks of the channel up to the day, each with the business day it was closed on and its
# state at the day's end, once per report in a temporary table. Only breaks open at some
# point of the trend's window (or still open) are kept: older history does not show.
_AS_OF_TABLE = "report_as_of"
# Most of a year's breaks were closed long before the window, and telling their closing day
# from the audit log is most of a report's work on a big store. A closed break last changed
# (updated_at: its closing or later) a day before both the window's first local midnight and
# the first run of a day in the window cannot have closed on a day in it: its closing day is
# the latest day of the runs started before it (all before the window), or, before any run,
# its local date. The day's margin covers the audit entry being written just after the
# update. Such breaks are left out before the audit log is read.
_LONG_CLOSED = """
  AND NOT (list_contains($closed, bi.state) AND bi.updated_at < (
    SELECT least(
      timezone($tz, CAST($start AS TIMESTAMP)),
      (SELECT min(started_at) FROM runs WHERE channel = $channel AND business_date >= $start)
    ) - INTERVAL 1 DAY
  ))"""
_AS_OF = """
CREATE OR REPLACE TEMP TABLE report_as_of AS
WITH b AS (
  SELECT bi.break_id, bi.kind, bi.state, bi.business_date, bi.amount_minor, bi.currency,
    bi.updated_at
  FROM break_items bi WHERE bi.channel = $channel AND bi.business_date <= $day{long_closed}
), closing AS (
  SELECT a.break_id, arg_max(a.logged_at, a.seq) AS closed_at,
    arg_max(a.from_state, a.seq) AS state_before
  FROM audit_log a SEMI JOIN b USING (break_id)
  WHERE list_contains($closed, a.to_state) GROUP BY a.break_id
), closed AS (
  SELECT b.*, c.state_before,
    CASE WHEN list_contains($closed, b.state) THEN coalesce(c.closed_at, b.updated_at) END
      AS closed_at
  FROM b LEFT JOIN closing c USING (break_id)
), run_days AS (
  -- the latest business date of the channel's runs started up to each run's start
  SELECT started_at, max(business_date) OVER (ORDER BY started_at) AS upto
  FROM runs WHERE channel = $channel
), dated AS MATERIALIZED (
  SELECT closed.*, CASE WHEN closed_at IS NULL THEN NULL WHEN r.upto IS NOT NULL THEN r.upto
    ELSE CAST(timezone($tz, closed_at) AS DATE) END AS closed_day
  FROM closed ASOF LEFT JOIN run_days r ON closed.closed_at >= r.started_at
)
SELECT break_id, kind, business_date, amount_minor, currency, closed_day,
  CASE WHEN closed_day > $day THEN coalesce(state_before, 'open') ELSE state END AS state_at,
  closed_day IS NULL OR closed_day > $day AS is_open,
  CAST($day - business_date AS INTEGER) AS age_days
FROM dated WHERE closed_day IS NULL OR closed_day >= $start
"""


def _money(rows: Iterable[tuple[Any, ...]]) -> tuple[Money, ...]:
    """(currency, sum) rows -> Money per currency; rows without an amount are counted only."""
    sums: dict[str, int] = defaultdict(int)
    for currency, minor in rows:
        if currency is not None and minor is not None:
            sums[str(currency)] += int(minor)
    return tuple(Money(sums[c], c) for c in sorted(sums))


def _tallies(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Tally]:
    """Rows of (key..., currency, count, amount sum) -> one Tally per key."""
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for *key, currency, count, minor in rows:
        groups[tuple(key)].append((currency, count, minor))
    return {
        k: Tally(sum(int(n) for _, n, _ in g), _money((c, m) for c, _, m in g))
        for k, g in groups.items()
    }


def _run(
    con: duckdb.DuckDBPyConnection, channel: str, day: dt.date
) -> tuple[RunInfo, MatchRate] | None:
    row = one_row(
        con.execute(
            # TIMESTAMPTZ comes back through pytz; a UTC wall time does not need it.
            "SELECT run_id, timezone('UTC', started_at), exit_code, bill_file, ledger_file, summary "
            "FROM runs "
            "WHERE channel = ? AND business_date = ? ORDER BY started_at DESC LIMIT 1",
            [channel, day],
        )
    )
    if row is None:
        return None
    s = json.loads(row[5] or "{}")
    run = RunInfo(
        run_id=str(row[0]),
        started_at=row[1].replace(tzinfo=dt.UTC),
        exit_code=row[2],
        bill_file=Path(row[3] or "").name,  # file names only: paths are the host's business
        ledger_file=Path(row[4] or "").name,
        quarantined=int(s.get("quarantined", 0)),
    )
    match = MatchRate(
        matched=int(s.get("matched", 0)),
        bill_rows=int(s.get("bill", {}).get("rows_parsed", 0)),
        ledger_rows=int(s.get("ledger", {}).get("rows_parsed", 0)),
    )
    return run, match


def _queues(con: duckdb.DuckDBPyConnection, channel: str, day: dt.date) -> tuple[QueueTally, ...]:
    records = con.execute(
        "SELECT queue, currency, count(*), sum(amount_minor) FROM ("
        "  SELECT DISTINCT queue, txn_type, merchant_order_id, merchant_refund_id, bill_line,"
        "    ledger_row, amount_minor, currency"
        "  FROM queue_items WHERE channel = ? AND business_date = ?) GROUP BY ALL",
        [channel, day],
    ).fetchall()
    rows = dict(
        con.execute(
            "SELECT queue, count(*) FROM queue_items WHERE channel = ? AND business_date = ? "
            "GROUP BY queue",
            [channel, day],
        ).fetchall()
    )
    tallies = _tallies(records)
    out = []
    for q in list(QUEUES) + sorted(set(rows) - set(QUEUES)):
        t = tallies.get((q,), Tally(0, ()))
        out.append(QueueTally(q, int(rows.get(q, 0)), t.count, t.amounts))
    return tuple(out)


def _exponent_sql(column: str) -> str:
    """The currency's minor-unit exponent (2 when unknown, as ``Money.major``) in SQL."""
    by_exp: dict[int, list[str]] = defaultdict(list)
    for currency, exp in CURRENCY_EXPONENTS.items():
        by_exp[exp].append(currency)
    whens = " ".join(
        f"WHEN {column} IN ({', '.join(repr(c) for c in sorted(cs))}) THEN {exp}"
        for exp, cs in sorted(by_exp.items())
        if exp != 2
    )
    return f"(CASE {whens} ELSE 2 END)"


_MAX_EXPONENT = max(CURRENCY_EXPONENTS.values())


# By value in major units across currencies (exactly: minor units scaled to the largest
# exponent, in HUGEINT): no FX, so this orders the list for the eye and never adds amounts of
# different currencies. Breaks without an amount last, then by id.
def _largest_first(t: str) -> str:
    """ORDER BY terms over table alias ``t``."""
    minor, currency = f"{t}.amount_minor", f"{t}.currency"
    scale = f"CAST(10 AS HUGEINT) ** ({_MAX_EXPONENT} - {_exponent_sql(currency)})"
    return (
        f"({minor} IS NULL OR coalesce({currency}, '') = ''), "
        f"CAST({minor} AS HUGEINT) * {scale} DESC NULLS LAST, {t}.break_id"
    )


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pl.DataFrame:
    """A query's rows as a frame. ``con.sql`` refuses to run while a previous ``execute``
    result is unfinished (the store's migration check leaves one): that is run to its end."""
    con.complete()
    df: pl.DataFrame = con.sql(sql, params=params).pl()
    return df


def _open_rows(con: duckdb.DuckDBPyConnection, limit: int) -> tuple[pl.DataFrame, int]:
    """The ``limit`` largest open breaks (largest first), masked, and how many are open."""
    row = one_row(con.execute(f"SELECT count(*) FROM {_AS_OF_TABLE} WHERE is_open"))
    count = int(row[0]) if row else 0
    columns = [str(c[0]) for c in con.execute("DESCRIBE break_items").fetchall()]
    personal = [c for c in columns if is_personal(c)]
    quoted = ", ".join("bi." + '"' + c.replace('"', '""') + '"' for c in personal)
    df = _frame(
        con,
        f"WITH t AS (SELECT break_id, kind, state_at, business_date, age_days, amount_minor, "
        f"currency FROM {_AS_OF_TABLE} a WHERE is_open ORDER BY {_largest_first('a')} "
        "LIMIT $limit) "
        "SELECT t.break_id, t.kind, t.state_at AS state, t.business_date, t.age_days, "
        "bi.txn_type, bi.merchant_order_id, bi.merchant_refund_id, "
        "coalesce(bi.channel_txn_id, '') AS channel_txn_id, coalesce(bi.field, '') AS field, "
        "coalesce(bi.ledger_value, '') AS ledger_value, "
        "coalesce(bi.channel_value, '') AS channel_value, coalesce(bi.assignee, '') AS assignee, "
        f"t.amount_minor, t.currency{', ' + quoted if quoted else ''} "
        f"FROM t JOIN break_items bi USING (break_id) ORDER BY {_largest_first('t')}",
        {"limit": limit},
    )
    df = df.cast({c: t for c, t in BREAK_FRAME_SCHEMA.items()}).cast(
        {c: pl.String for c in personal}
    )
    return _masked(df, personal), count


def _masked(df: pl.DataFrame, personal: list[str]) -> pl.DataFrame:
    """Personal columns, and both sides' values of a break on a personal field, masked: each
    distinct value is masked once."""

    def mask_values(column: pl.Expr, values: pl.Series) -> pl.Expr:
        distinct = values.drop_nulls().unique().to_list()
        return column.replace(distinct, [mask(str(v)) for v in distinct])

    personal_fields = [f for f in df["field"].unique().to_list() if f and is_personal(f)]
    on_field = pl.col("field").is_in(personal_fields)
    exprs = [
        pl.when(on_field)
        .then(mask_values(pl.col(c), df.filter(on_field)[c]))
        .otherwise(pl.col(c))
        .alias(c)
        for c in ("ledger_value", "channel_value")
    ]
    exprs += [mask_values(pl.col(c), df[c]).alias(c) for c in personal]
    return df.with_columns(exprs)


def _break_tallies(con: duckdb.DuckDBPyConnection, day: dt.date) -> tuple[BreakTally, ...]:
    """Open at the day's end, or closed on the day, by kind and state."""
    rows = con.execute(
        f"SELECT kind, state_at, currency, count(*), sum(amount_minor) FROM {_AS_OF_TABLE} "
        "WHERE is_open OR closed_day = $day GROUP BY ALL",
        {"day": day},
    ).fetchall()
    order = {s: i for i, s in enumerate(BREAK_STATES)}
    tallies = sorted(_tallies(rows).items(), key=lambda i: (i[0][0], order.get(i[0][1], 99)))
    return tuple(BreakTally(kind, state, t) for (kind, state), t in tallies)


def _aging(con: duckdb.DuckDBPyConnection) -> tuple[AgingBucket, ...]:
    rows = con.execute(
        f"SELECT age_days, currency, count(*), sum(amount_minor) FROM {_AS_OF_TABLE} "
        "WHERE is_open GROUP BY ALL"
    ).fetchall()
    by_age = _tallies(rows)
    buckets = []
    for label, lo, hi in AGING:
        inside = [t for (age,), t in by_age.items() if lo <= age and (hi is None or age <= hi)]
        amounts = _money((m.currency, m.minor) for t in inside for m in t.amounts)
        buckets.append(AgingBucket(label, Tally(sum(t.count for t in inside), amounts)))
    return tuple(buckets)


# The open backlog at the end of each day of the window, as running sums: a break counts
# from its business date (the window's start for older ones) and stops counting from the
# later of its business date and the day it was closed. ``k`` counts the amounts there are,
# so that a day whose open breaks have none shows no sum, as a sum over them would not.
# Linear in the breaks, where joining each day to every break was not.
_TREND_SQL = f"""
WITH events AS (
  SELECT greatest(business_date, $start) AS d, currency, 1 AS n,
    CAST(amount_minor IS NOT NULL AS INTEGER) AS k, amount_minor AS m
  FROM {_AS_OF_TABLE}
  UNION ALL
  SELECT greatest(business_date, closed_day), currency, -1,
    -CAST(amount_minor IS NOT NULL AS INTEGER), -amount_minor
  FROM {_AS_OF_TABLE}
  WHERE closed_day IS NOT NULL AND greatest(business_date, closed_day) <= $day
), by_day AS (
  SELECT d, currency, sum(n) AS n, sum(k) AS k, sum(m) AS m FROM events GROUP BY ALL
), running AS (
  SELECT CAST(x AS DATE) AS x, b.currency, sum(b.n) AS n, sum(b.k) AS k, sum(b.m) AS m
  FROM generate_series($start, $day, INTERVAL 1 DAY) days(x)
  JOIN by_day b ON b.d <= CAST(x AS DATE) GROUP BY ALL
)
SELECT x, currency, n, CASE WHEN k > 0 THEN m END FROM running
"""


def _trend(con: duckdb.DuckDBPyConnection, day: dt.date) -> tuple[TrendPoint, ...]:
    """The open backlog at the end of each day of the window, by the same rule as the day's."""
    start = day - dt.timedelta(days=TREND_DAYS - 1)
    rows = con.execute(_TREND_SQL, {"start": start, "day": day}).fetchall()
    by_day = _tallies(rows)
    window = (start + dt.timedelta(days=n) for n in range(TREND_DAYS))
    return tuple(TrendPoint(d, by_day.get((d,), Tally(0, ()))) for d in window)


def load_report(
    con: duckdb.DuckDBPyConnection,
    channel: str,
    day: dt.date,
    *,
    tz: str,
    top: int = 20,
    now: dt.datetime | None = None,
    sheet_rows: int = SHEET_ROWS,
) -> ReportData:
    """``tz`` dates closings made before any run; ``top`` is how many open breaks the HTML
    lists, ``sheet_rows`` how many the workbook lists (``open_count`` says how many there are)."""
    params = {
        "channel": channel, "day": day, "tz": tz, "closed": list(CLOSED_STATES),
        "start": day - dt.timedelta(days=TREND_DAYS - 1),
    }  # fmt: skip
    run_match = _run(con, channel, day)
    con.execute(_AS_OF.format(long_closed=_LONG_CLOSED), params)
    try:
        open_rows, open_count = _open_rows(con, max(sheet_rows, top))
        return ReportData(
            channel=channel,
            day=day,
            generated_at=now or dt.datetime.now(dt.UTC),
            run=run_match[0] if run_match else None,
            match=run_match[1] if run_match else None,
            queues=_queues(con, channel, day),
            breaks=_break_tallies(con, day),
            aging=_aging(con),
            trend=_trend(con, day),
            open_count=open_count,
            open_rows=open_rows,
            top=top,
            sheet_rows=sheet_rows,
        )
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_AS_OF_TABLE}")


def load_queues(
    con: duckdb.DuckDBPyConnection, channel: str, day: dt.date, *, limit: int | None = SHEET_ROWS
) -> dict[str, pl.DataFrame]:
    """The channel-day's queue rows as the store holds them, with the amount as text: the
    first ``limit`` rows of each queue (all of them with ``None``), in the queue files' order."""
    out = {}
    for q in QUEUES:
        df = _frame(
            con,
            "SELECT * EXCLUDE (run_id, queue) FROM queue_items "
            "WHERE channel = $channel AND business_date = $day AND queue = $queue "
            "ORDER BY bill_line NULLS LAST, ledger_row NULLS LAST, field"
            + ("" if limit is None else " LIMIT $limit"),
            {"channel": channel, "day": day, "queue": q}
            | ({} if limit is None else {"limit": limit}),
        )
        amount = format_minor_expr(pl.col("amount_minor"), exponent_expr(pl.col("currency")))
        out[q] = df.with_columns(amount.alias("amount"))
    return out


def write_reports(
    store_path: Path,
    channel: str,
    day: dt.date,
    out_dir: Path,
    *,
    tz: str,
    sheet_rows: int = SHEET_ROWS,
    memory_limit: str = REPORT_MEMORY_LIMIT,
) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/queues.xlsx`` for one channel-day; the
    workbook shows at most ``sheet_rows`` rows of each queue and of the open breaks. ``tz``
    is the channel's time zone (load_report). DuckDB works within ``memory_limit`` ("512MB",
    "1GiB"...), spilling beside the store beyond it."""
    if not _MEMORY_LIMIT.match(memory_limit):
        raise ValueError(f"memory_limit: expected e.g. '512MB' or '1GiB', not {memory_limit!r}")
    # Imported here: the writers import this module for its types.
    from recon.report_html import write_html
    from recon.report_xlsx import write_xlsx

    if not store_path.exists():
        raise FileNotFoundError(f"{store_path}: no store to report from")
    with open_store(store_path) as con:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET enable_progress_bar = false")  # no bars in the run's log
        data = load_report(con, channel, day, tz=tz, sheet_rows=sheet_rows)
        queues = load_queues(con, channel, day, limit=sheet_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, xlsx = out_dir / "report.html", out_dir / "queues.xlsx"
    _atomic(html, lambda p: write_html(data, p))
    _atomic(xlsx, lambda p: write_xlsx(data, queues, p))
    return html, xlsx


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # readers never see half a report


__all__ = [
    "REPORT_MEMORY_LIMIT", "SHEET_ROWS", "ReportData", "load_queues", "load_report", "write_reports",
]  # fmt: skip
