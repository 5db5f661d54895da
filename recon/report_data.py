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
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recon.currency import CURRENCY_EXPONENTS
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
    open_breaks: tuple[BreakRow, ...]  # largest amount first
    top: int

    @property
    def largest(self) -> tuple[BreakRow, ...]:
        return self.open_breaks[: self.top]


_AS_OF = """
WITH closing AS (
  SELECT break_id, logged_at AS closed_at, from_state AS state_before
  FROM audit_log WHERE list_contains($closed, to_state)
  QUALIFY row_number() OVER (PARTITION BY break_id ORDER BY seq DESC) = 1
), b AS (
  SELECT bi.*, c.state_before,
    CASE WHEN list_contains($closed, bi.state) THEN coalesce(c.closed_at, bi.updated_at) END
      AS closed_at
  FROM break_items bi LEFT JOIN closing c USING (break_id)
  WHERE bi.channel = $channel
), dated AS (
  SELECT b.*, CASE WHEN closed_at IS NOT NULL THEN coalesce(
    (SELECT max(r.business_date) FROM runs r
     WHERE r.channel = b.channel AND r.started_at <= b.closed_at),
    CAST(timezone($tz, closed_at) AS DATE)) END AS closed_day
  FROM b
), as_of AS (
  SELECT *,
    CASE WHEN closed_day > $day THEN coalesce(state_before, 'open') ELSE state END AS state_at,
    closed_day IS NULL OR closed_day > $day AS is_open,
    CAST($day - business_date AS INTEGER) AS age_days
  FROM dated WHERE business_date <= $day
)
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
    row = con.execute(
        # TIMESTAMPTZ comes back through pytz; a UTC wall time does not need it.
        "SELECT run_id, timezone('UTC', started_at), exit_code, bill_file, ledger_file, summary "
        "FROM runs "
        "WHERE channel = ? AND business_date = ? ORDER BY started_at DESC LIMIT 1",
        [channel, day],
    ).fetchone()
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


_ROW_COLUMNS = (
    "break_id", "kind", "state_at", "business_date", "age_days", "txn_type", "merchant_order_id",
    "merchant_refund_id", "channel_txn_id", "field", "amount_minor", "currency", "ledger_value",
    "channel_value", "assignee",
)  # fmt: skip


def _break_row(r: dict[str, Any], personal: list[str]) -> BreakRow:
    field = r["field"] or ""

    def value(column: str) -> str:
        v = "" if r[column] is None else str(r[column])
        return mask(v) if v and is_personal(field) else v

    amount = r["amount_minor"]
    return BreakRow(
        break_id=int(r["break_id"]),
        kind=r["kind"],
        state=r["state_at"],
        business_date=r["business_date"],
        age_days=int(r["age_days"]),
        txn_type=r["txn_type"],
        merchant_order_id=r["merchant_order_id"],
        merchant_refund_id=r["merchant_refund_id"],
        channel_txn_id=r["channel_txn_id"] or "",
        field=field,
        amount=Money(int(amount), r["currency"]) if amount is not None and r["currency"] else None,
        ledger_value=value("ledger_value"),
        channel_value=value("channel_value"),
        assignee=r["assignee"] or "",
        personal=tuple((c, mask(str(r[c]))) for c in personal if r[c] is not None),
    )


def _open_breaks(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> tuple[BreakRow, ...]:
    columns = [str(c[0]) for c in con.execute("DESCRIBE break_items").fetchall()]
    personal = [c for c in columns if is_personal(c)]
    wanted = [*_ROW_COLUMNS, *personal]
    select = ", ".join('"' + c.replace('"', '""') + '"' for c in wanted)
    found = con.execute(_AS_OF + f"SELECT {select} FROM as_of WHERE is_open", params).fetchall()
    rows = [_break_row(dict(zip(wanted, r, strict=True)), personal) for r in found]
    return tuple(sorted(rows, key=_largest_first))


def _largest_first(b: BreakRow) -> tuple[int, Decimal, int]:
    # By value in major units across currencies: no FX, so this orders the list for the
    # eye and never adds amounts of different currencies. Breaks without an amount last.
    return (b.amount is None, -(b.amount.major if b.amount else Decimal(0)), b.break_id)


def _break_tallies(
    con: duckdb.DuckDBPyConnection, params: dict[str, Any]
) -> tuple[BreakTally, ...]:
    """Open at the day's end, or closed on the day, by kind and state."""
    rows = con.execute(
        _AS_OF + "SELECT kind, state_at, currency, count(*), sum(amount_minor) FROM as_of "
        "WHERE is_open OR closed_day = $day GROUP BY ALL",
        params,
    ).fetchall()
    order = {s: i for i, s in enumerate(BREAK_STATES)}
    tallies = sorted(_tallies(rows).items(), key=lambda i: (i[0][0], order.get(i[0][1], 99)))
    return tuple(BreakTally(kind, state, t) for (kind, state), t in tallies)


def _aging(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> tuple[AgingBucket, ...]:
    rows = con.execute(
        _AS_OF + "SELECT age_days, currency, count(*), sum(amount_minor) FROM as_of "
        "WHERE is_open GROUP BY ALL",
        params,
    ).fetchall()
    by_age = _tallies(rows)
    buckets = []
    for label, lo, hi in AGING:
        inside = [t for (age,), t in by_age.items() if lo <= age and (hi is None or age <= hi)]
        amounts = _money((m.currency, m.minor) for t in inside for m in t.amounts)
        buckets.append(AgingBucket(label, Tally(sum(t.count for t in inside), amounts)))
    return tuple(buckets)


def _trend(
    con: duckdb.DuckDBPyConnection, day: dt.date, params: dict[str, Any]
) -> tuple[TrendPoint, ...]:
    """The open backlog at the end of each day of the window, by the same rule as the day's."""
    rows = con.execute(
        _AS_OF + "SELECT CAST(x AS DATE), currency, count(break_id), sum(amount_minor) "
        "FROM generate_series($day - CAST($span AS INTEGER), $day, INTERVAL 1 DAY) days(x) "
        "LEFT JOIN dated ON business_date <= CAST(x AS DATE) "
        "AND (closed_day IS NULL OR closed_day > CAST(x AS DATE)) GROUP BY ALL",
        params | {"span": TREND_DAYS - 1},
    ).fetchall()
    by_day = _tallies(rows)
    window = (day - dt.timedelta(days=n) for n in range(TREND_DAYS - 1, -1, -1))
    return tuple(TrendPoint(d, by_day.get((d,), Tally(0, ()))) for d in window)


def load_report(
    con: duckdb.DuckDBPyConnection,
    channel: str,
    day: dt.date,
    *,
    top: int = 20,
    tz: str = "Asia/Shanghai",
    now: dt.datetime | None = None,
) -> ReportData:
    """``tz`` dates closings made before any run; ``top`` is how many open breaks the HTML lists."""
    params = {"channel": channel, "day": day, "tz": tz, "closed": list(CLOSED_STATES)}
    run_match = _run(con, channel, day)
    return ReportData(
        channel=channel,
        day=day,
        generated_at=now or dt.datetime.now(dt.UTC),
        run=run_match[0] if run_match else None,
        match=run_match[1] if run_match else None,
        queues=_queues(con, channel, day),
        breaks=_break_tallies(con, params),
        aging=_aging(con, params),
        trend=_trend(con, day, params),
        open_breaks=_open_breaks(con, params),
        top=top,
    )


def load_queues(
    con: duckdb.DuckDBPyConnection, channel: str, day: dt.date
) -> dict[str, pl.DataFrame]:
    """The channel-day's queue rows as the store holds them, with the amount as text."""
    df: pl.DataFrame = con.sql(
        "SELECT * EXCLUDE (run_id) FROM queue_items WHERE channel = ? AND business_date = ? "
        "ORDER BY queue, bill_line NULLS LAST, ledger_row NULLS LAST, field",
        params=[channel, day],
    ).pl()
    amount = format_minor_expr(pl.col("amount_minor"), exponent_expr(pl.col("currency")))
    df = df.with_columns(amount.alias("amount"))
    return {q: df.filter(pl.col("queue") == q).drop("queue") for q in QUEUES}


def write_reports(store_path: Path, channel: str, day: dt.date, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/queues.xlsx`` for one channel-day."""
    # Imported here: the writers import this module for its types.
    from recon.report_html import write_html
    from recon.report_xlsx import write_xlsx

    if not store_path.exists():
        raise FileNotFoundError(f"{store_path}: no store to report from")
    with open_store(store_path) as con:
        data = load_report(con, channel, day)
        queues = load_queues(con, channel, day)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, xlsx = out_dir / "report.html", out_dir / "queues.xlsx"
    _atomic(html, lambda p: write_html(data, p))
    _atomic(xlsx, lambda p: write_xlsx(data, queues, p))
    return html, xlsx


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # readers never see half a report


__all__ = ["ReportData", "load_queues", "load_report", "write_reports"]
