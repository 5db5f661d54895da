"""Analyst reports (report.html, queues.xlsx) from a real store: the figures are the store's.

The store is filled by the real CLI for two generated days, then given hand-made breaks
spread over the aging buckets, closed before / on / after the report's day, one with a
formula-like order id, one with markup in it, one in USD, one too long for Excel's digits,
and personal data (a buyer id column, an Alipay counterparty account). The expected
figures come from plain SQL plus a small Python re-statement of the "as of" rules in
recon/report_data.py. Goldens live in tests/golden/reports; RECON_UPDATE_GOLDEN=1 rewrites.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import openpyxl  # type: ignore[import-untyped]
import polars as pl
import pytest

from data.generate import generate, write_day
from recon.cli import main
from recon.masking import is_personal, mask
from recon.money import format_minor
from recon.outputs import write_frame
from recon.queues import QUEUES
from recon.report_data import AGING, ReportData, load_report, write_reports
from recon.report_xlsx import write_xlsx
from recon.store import CLOSED_STATES, open_store

DAY = dt.date(2024, 3, 1)
NEXT = DAY + dt.timedelta(days=1)
CH = "wechatpay"
TZ = "Asia/Shanghai"  # the channel's
GOLDEN = Path(__file__).parent / "golden" / "reports"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
OTHER_OPENID = "oUxx9uMuAJO_M2pxb1Q9zNjWeAAz"
ALIPAY_ACCOUNT = "*津水(602***@qq.com)"
FORMULA_ID = '=HYPERLINK("http://evil.example/","click")'
MARKUP_ID = "<img src=x onerror=alert(1)>"
HUGE_MINOR = 123_456_789_012_345_678  # 18 digits: beyond Excel's 15


@dataclass
class Store:
    db: Path
    out: Path  # the CLI's output directory of DAY
    reports: Path  # write_reports' output directory for DAY


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _cli(files: dict[str, Path], day: dt.date, db: Path, out: Path) -> None:
    code = main(
        [
            "run", "--channel", CH, "--date", day.isoformat(), "--bill", str(files[CH]),
            "--ledger", str(files["ledger"]), "--out", str(out), "--store", str(db),
        ]
    )  # fmt: skip
    assert code == 1  # the generated days have breaks


_BREAK_SQL = (
    "INSERT INTO break_items (channel, txn_type, merchant_order_id, merchant_refund_id, kind, "
    "field, business_date, state, amount_minor, currency, amount, ledger_value, channel_value, "
    "channel_txn_id, first_seen, last_seen, updated_at) "
    "VALUES (?, 'payment', ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, '4200000000000000000000000001', ?, ?, ?) "
    "RETURNING break_id"
)


def _add_break(
    con: duckdb.DuckDBPyConnection,
    order: str,
    kind: str,
    age: int,
    state: str = "open",
    minor: int | None = 1000,
    currency: str | None = "CNY",
    field: str = "",
    values: tuple[str, str] = ("", ""),
) -> int:
    bd = DAY - dt.timedelta(days=age)
    amount = format_minor(minor, currency) if minor is not None and currency else None
    row = con.execute(
        _BREAK_SQL,
        [CH, order, kind, field, bd, state, minor, currency, amount, *values, bd, bd,
         dt.datetime.now(dt.UTC)],
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def _close(con: duckdb.DuckDBPyConnection, bid: int, frm: str, to: str, at: dt.datetime) -> None:
    con.execute(
        "INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state, note) "
        "VALUES (?, 'analyst', ?, 'close', ?, ?, 'test')",
        [at, bid, frm, to],
    )


def build_store(tmp: Path) -> Store:
    db = tmp / "store.duckdb"
    files = write_day(generate(DAY, 40, seed=5), DAY, tmp / "day")
    nxt = write_day(generate(NEXT, 40, seed=6), NEXT, tmp / "next")
    _cli(files, DAY, db, tmp / "out")
    between = dt.datetime.now(dt.UTC)  # after DAY's run, before NEXT's: closes on DAY
    time.sleep(0.01)
    _cli(nxt, NEXT, db, tmp / "out_next")
    with open_store(db) as con:
        _add_break(con, "RPT-AGE1", "local_missing", 1, minor=5000)
        _add_break(con, FORMULA_ID, "local_missing", 2, minor=900_000)
        _add_break(con, MARKUP_ID, "channel_missing", 5, "pending_timing", minor=777)
        _add_break(con, "RPT-USD", "channel_missing", 12, minor=4200, currency="USD")
        old = _add_break(
            con, "RPT-OLD", "field_mismatch", 45, minor=1999, field="buyer_id",
            values=(OPENID, OTHER_OPENID),
        )  # fmt: skip
        _add_break(con, "RPT-HUGE", "local_missing", 3, minor=HUGE_MINOR)
        _add_break(con, "RPT-NOAMT", "field_mismatch", 8, minor=None, currency=None, field="status")
        before = _add_break(con, "RPT-CLOSED-BEFORE", "local_missing", 20, "resolved")
        _close(con, before, "open", "resolved", dt.datetime(2024, 2, 20, 2, tzinfo=dt.UTC))
        on_day = _add_break(con, "RPT-CLOSED-ON-DAY", "channel_missing", 4, "written_off")
        _close(con, on_day, "open", "written_off", between)
        after = _add_break(con, "RPT-CLOSED-AFTER", "field_mismatch", 6, "resolved", minor=3000)
        _close(con, after, "pending_timing", "resolved", dt.datetime.now(dt.UTC))
        # Personal data in columns a later schema might carry.
        con.execute("ALTER TABLE break_items ADD COLUMN buyer_id VARCHAR")
        con.execute("UPDATE break_items SET buyer_id = ? WHERE break_id = ?", [OPENID, old])
        con.execute('ALTER TABLE queue_items ADD COLUMN "对方账户" VARCHAR')
        con.execute('ALTER TABLE queue_items ADD COLUMN "用户标识" VARCHAR')
        con.execute(
            'UPDATE queue_items SET "对方账户" = ?, "用户标识" = ? WHERE business_date = ?',
            [ALIPAY_ACCOUNT, OPENID, DAY],
        )
        con.execute(
            "UPDATE queue_items SET merchant_refund_id = '@SUM(1+1)*cmd' WHERE business_date = ? "
            "AND queue = 'channel_missing'",
            [DAY],
        )
    html, xlsx = write_reports(db, CH, DAY, tmp / "reports", tz=TZ)
    assert (html.name, xlsx.name) == ("report.html", "queues.xlsx")
    return Store(db=db, out=tmp / "out", reports=tmp / "reports")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def data(store: Store) -> ReportData:
    with open_store(store.db) as con:
        return load_report(con, CH, DAY, tz=TZ)


# --- the expected figures, straight from the store --------------------------------------------

Amounts = dict[str, str]
Figure = tuple[int, Amounts]


def _figure(rows: list[tuple[Any, Any]]) -> Figure:
    """(amount_minor, currency) rows -> (count, amount per currency)."""
    sums: dict[str, int] = defaultdict(int)
    for minor, cur in rows:
        if minor is not None and cur is not None:
            sums[cur] += minor
    return len(rows), {c: format_minor(v, c) for c, v in sorted(sums.items())}


@dataclass
class Break:
    kind: str
    state: str
    business_date: dt.date
    minor: int | None
    currency: str | None
    closed_day: dt.date | None
    closed_from: str | None

    def open_at(self, day: dt.date) -> bool:
        return self.business_date <= day and (self.closed_day is None or self.closed_day > day)

    def state_at(self, day: dt.date) -> str:
        if self.closed_day is not None and self.closed_day > day:
            return self.closed_from or "open"
        return self.state


def store_breaks(db: Path) -> list[Break]:
    """Each break of the channel with its closing day by the store's business-day clock."""
    runs = query(db, "SELECT business_date, epoch_ms(started_at) FROM runs WHERE channel = ?", [CH])
    closes: dict[int, tuple[int, str | None]] = {}
    for bid, ms, frm, to in query(
        db, "SELECT break_id, epoch_ms(logged_at), from_state, to_state FROM audit_log ORDER BY seq"
    ):
        if to in CLOSED_STATES:
            closes[bid] = (ms, frm)
    out = []
    for bid, kind, state, bd, minor, cur, updated in query(
        db,
        "SELECT break_id, kind, state, business_date, amount_minor, currency, epoch_ms(updated_at) "
        "FROM break_items WHERE channel = ?",
        [CH],
    ):
        closed_day, closed_from = None, None
        if state in CLOSED_STATES:
            ms, closed_from = closes.get(bid, (updated, None))
            days = [d for d, started in runs if started <= ms]
            local = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(TZ)).date()
            closed_day = max(days) if days else local
        out.append(Break(kind, state, bd, minor, cur, closed_day, closed_from))
    return out


def expected_metrics(db: Path, day: dt.date = DAY) -> dict[str, str]:
    """Every data-metric of report.html, computed from the store without recon.report_data."""
    m: dict[str, str] = {}

    def put(prefix: str, fig: Figure) -> None:
        m[f"{prefix}.count"] = str(fig[0])
        m.update({f"{prefix}.amount.{c}": a for c, a in fig[1].items()})

    for queue, rows in query(
        db,
        "SELECT queue, count(*) FROM queue_items WHERE channel = ? AND business_date = ? "
        "GROUP BY queue",
        [CH, day],
    ):
        m[f"{queue}.count"] = str(rows)
    records: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for queue, minor, cur in query(
        db,
        "SELECT DISTINCT ON (queue, txn_type, merchant_order_id, merchant_refund_id, bill_line, "
        "ledger_row) queue, amount_minor, currency FROM queue_items "
        "WHERE channel = ? AND business_date = ?",
        [CH, day],
    ):
        records[queue].append((minor, cur))
    for queue, rows in records.items():
        count, amounts = _figure(rows)
        m[f"{queue}.records"] = str(count)
        m.update({f"{queue}.amount.{c}": a for c, a in amounts.items()})
    (summary,) = query(
        db,
        "SELECT summary FROM runs WHERE channel = ? AND business_date = ? "
        "ORDER BY started_at DESC LIMIT 1",
        [CH, day],
    )[0]
    s = json.loads(summary)
    m["match.matched"] = str(s["matched"])
    m["match.bill_rows"] = str(s["bill"]["rows_parsed"])
    m["match.ledger_rows"] = str(s["ledger"]["rows_parsed"])
    m["match.rate"] = f"{Decimal(100 * s['matched']) / s['bill']['rows_parsed']:.2f}%"
    m["run.quarantined"] = str(s["quarantined"])

    breaks = store_breaks(db)
    shown: dict[tuple[str, str], list[tuple[Any, Any]]] = defaultdict(list)
    for b in breaks:
        if b.business_date <= day and (b.open_at(day) or b.closed_day == day):
            shown[(b.kind, b.state_at(day))].append((b.minor, b.currency))
    for (kind, state), rows in shown.items():
        put(f"breaks.{kind}.{state}", _figure(rows))
    open_now = [b for b in breaks if b.open_at(day)]
    m["open.count"] = str(len(open_now))
    for label, lo, hi in AGING:
        aged = [
            (b.minor, b.currency)
            for b in open_now
            if lo <= (day - b.business_date).days
            and (hi is None or (day - b.business_date).days <= hi)
        ]
        put(f"aging.{label}", _figure(aged))
    for n in range(30):
        x = day - dt.timedelta(days=n)
        put(f"trend.{x}", _figure([(b.minor, b.currency) for b in breaks if b.open_at(x)]))
    return m


class _Metrics(HTMLParser):
    """data-metric -> text, plus every tag and attribute name seen."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, str] = {}
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(a for a, _ in attrs)
        self._open.append((tag, dict(attrs).get("data-metric")))
        if self._open[-1][1] is not None:
            self.metrics[str(self._open[-1][1])] = ""

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, metric in self._open:
            if metric is not None:
                self.metrics[metric] += data


def parse_html(text: str) -> _Metrics:
    p = _Metrics()
    p.feed(text)
    p.close()
    return p


def html_metrics(text: str) -> dict[str, str]:
    return {
        k: v.strip() for k, v in parse_html(text).metrics.items() if not k.startswith("largest.")
    }


# --- ReportData against the store ------------------------------------------------------------


def test_report_figures_equal_the_store(data: ReportData, store: Store) -> None:
    exp = expected_metrics(store.db)
    got: dict[str, str] = {}
    for q in data.queues:
        got[f"{q.queue}.count"] = str(q.rows)
        got[f"{q.queue}.records"] = str(q.records)
        got.update({f"{q.queue}.amount.{m.currency}": m.text for m in q.amounts})
    assert data.match is not None
    assert data.run is not None
    got |= {
        "match.matched": str(data.match.matched),
        "match.bill_rows": str(data.match.bill_rows),
        "match.ledger_rows": str(data.match.ledger_rows),
        "match.rate": data.match.percent,
        "run.quarantined": str(data.run.quarantined),
        "open.count": str(len(data.open_breaks)),
    }
    tallies = [(f"breaks.{b.kind}.{b.state}", b.tally) for b in data.breaks]
    tallies += [(f"aging.{a.label}", a.tally) for a in data.aging]
    tallies += [(f"trend.{p.day}", p.tally) for p in data.trend]
    for prefix, t in tallies:
        got[f"{prefix}.count"] = str(t.count)
        got.update({f"{prefix}.amount.{m.currency}": m.text for m in t.amounts})
    assert got == exp


def test_queue_figures_agree_with_the_runs_summary_json(data: ReportData, store: Store) -> None:
    summary = json.loads((store.out / "summary.json").read_text(encoding="utf-8"))
    for q in data.queues:
        s = summary["queues"][q.queue]
        assert q.records == s.get("pairs", s["count"])
        assert {m.currency: m.text for m in q.amounts} == s["amount"]
    fm = next(q for q in data.queues if q.queue == "field_mismatch")
    assert fm.rows == summary["queues"]["field_mismatch"]["count"]


def test_breaks_are_shown_as_they_stood_at_the_end_of_the_day(data: ReportData) -> None:
    orders = {b.merchant_order_id: b for b in data.open_breaks}
    assert "RPT-CLOSED-BEFORE" not in orders
    assert "RPT-CLOSED-ON-DAY" not in orders
    assert orders["RPT-CLOSED-AFTER"].state == "pending_timing"  # the state it was closed from
    states = {(b.kind, b.state) for b in data.breaks}
    assert ("channel_missing", "written_off") in states  # closed on the day: still listed
    assert ("local_missing", "resolved") not in states
    assert all(a.tally.count >= 1 for a in data.aging)
    trend = {p.day: p.tally.count for p in data.trend}
    assert len(trend) == 30
    assert min(trend) == DAY - dt.timedelta(days=29)
    assert max(trend) == DAY
    # RPT-CLOSED-BEFORE (business date 02-10, closed 02-20) is open up to 02-19 only.
    assert trend[dt.date(2024, 2, 19)] - trend[dt.date(2024, 2, 20)] == 1


def test_largest_first_by_value_with_personal_data_masked(data: ReportData) -> None:
    majors = [b.amount.major for b in data.open_breaks if b.amount]
    assert majors == sorted(majors, reverse=True)
    assert data.open_breaks[0].merchant_order_id == "RPT-HUGE"
    assert data.open_breaks[-1].amount is None  # no amount: last
    old = next(b for b in data.open_breaks if b.merchant_order_id == "RPT-OLD")
    assert (old.ledger_value, old.channel_value) == ("oU****6o", "oU****Az")
    assert old.personal == (("buyer_id", "oU****6o"),)
    assert data.largest == data.open_breaks[: data.top]


def test_a_day_without_a_run_still_reports(store: Store) -> None:
    with open_store(store.db) as con:
        d = load_report(con, CH, DAY - dt.timedelta(days=3), tz=TZ)
    assert d.run is None
    assert d.match is None
    assert all(q.rows == 0 for q in d.queues)


def test_write_reports_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_reports(tmp_path / "none.duckdb", CH, DAY, tmp_path / "r", tz=TZ)
    assert not (tmp_path / "none.duckdb").exists()


def test_write_reports_takes_a_memory_limit_duckdb_understands(
    store: Store, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        write_reports(store.db, CH, DAY, tmp_path / "r", memory_limit="1GB; DROP TABLE runs", tz=TZ)


# --- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (OPENID, "oU****6o"),
        (ALIPAY_ACCOUNT, "**(6****@qq.com)"),
        ("*明(13812345678)", "**(13****78)"),
        ("buyer@example.com", "b****@example.com"),
        ("2088102122524333", "20****33"),
        ("abc", "****"),
        ("", ""),
    ],
)
def test_mask(raw: str, masked: str) -> None:
    assert mask(raw) == masked
    assert mask(masked) == masked  # masking twice on the way out changes nothing


def test_personal_columns_are_named_so() -> None:
    assert all(map(is_personal, ["buyer_id", "对方账户", "用户标识", "payer_account", "user"]))
    assert not any(map(is_personal, ["merchant_order_id", "channel_txn_id", "amount", "field"]))


# --- report.html ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def html(store: Store) -> str:
    return (store.reports / "report.html").read_text(encoding="utf-8")


def test_html_metrics_equal_the_store(html: str, store: Store) -> None:
    assert html_metrics(html) == expected_metrics(store.db)


def test_html_is_self_contained_escaped_and_masked(html: str) -> None:
    parsed = parse_html(html)
    assert parsed.tags.isdisjoint({"script", "link", "img", "iframe", "object", "embed"})
    assert parsed.attrs.isdisjoint({"src", "href", "onerror", "onload"})
    assert "default-src 'none'" in html  # and the browser is told to fetch nothing
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "=HYPERLINK(&quot;http://evil.example/&quot;,&quot;click&quot;)" in html
    assert OPENID not in html
    assert OTHER_OPENID not in html
    assert "oU****6o" in html
    for chinese in ("本地丢失", "渠道丢失", "数据差错"):
        assert chinese in html


def _normalised(text: str) -> str:
    """Generation time, run ids and start times change on every run."""
    return re.sub(r'(data-field="(?:generated_at|run_id|run_started_at)">)[^<]*', r"\1…", text)


def test_html_matches_golden(html: str) -> None:
    golden = GOLDEN / f"{CH}_{DAY}.html"
    got = _normalised(html)
    if os.environ.get("RECON_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    if not golden.exists():
        pytest.fail(f"no golden {golden}: run with RECON_UPDATE_GOLDEN=1 and review it")
    assert got == golden.read_text(encoding="utf-8")


# --- queues.xlsx ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workbook(store: Store) -> Any:
    return openpyxl.load_workbook(store.reports / "queues.xlsx")


def _records(ws: Any) -> list[dict[str, Any]]:
    rows = list(ws.iter_rows())
    names = [c.value for c in rows[0]]
    return [dict(zip(names, r, strict=True)) for r in rows[1:]]


def test_workbook_has_a_summary_and_a_sheet_per_queue(workbook: Any, store: Store) -> None:
    assert workbook.sheetnames == [
        "Summary", "local_missing", "channel_missing", "field_mismatch", "Open breaks"
    ]  # fmt: skip
    for queue in ("local_missing", "channel_missing", "field_mismatch"):
        ((n,),) = query(
            store.db,
            "SELECT count(*) FROM queue_items WHERE queue = ? AND business_date = ?",
            [queue, DAY],
        )
        assert workbook[queue].max_row == n + 1


def test_ids_are_text_cells_and_survive(workbook: Any, store: Store) -> None:
    ids = {
        str(r[0])
        for r in query(
            store.db, "SELECT merchant_order_id FROM queue_items WHERE business_date = ?", [DAY]
        )
    }
    assert any(i.startswith("0") for i in ids)
    assert any(len(i) == 18 and i.isdigit() for i in ids)
    seen = set()
    for queue in ("local_missing", "channel_missing", "field_mismatch"):
        for rec in _records(workbook[queue]):
            for col in ("merchant_order_id", "channel_txn_id"):
                if rec[col].value is not None:
                    assert rec[col].data_type == "s"
            seen.add(rec["merchant_order_id"].value)
    assert seen == ids


def test_amounts_are_exact_and_never_float_text(workbook: Any, store: Store) -> None:
    for rec in _records(workbook["local_missing"]):
        cell = rec["amount"]
        places = cell.number_format.split(".")[1]
        assert cell.data_type == "n"
        assert places == "00"
        minor, cur = rec["amount_minor"].value, rec["currency"].value
        assert f"{Decimal(str(cell.value)):.2f}" == format_minor(minor, cur)
    huge = next(
        r for r in _records(workbook["Open breaks"]) if r["merchant_order_id"].value == "RPT-HUGE"
    )
    assert huge["amount"].data_type == "s"
    assert huge["amount"].value == format_minor(HUGE_MINOR, "CNY")


def test_formula_like_cells_are_neutralised(workbook: Any) -> None:
    texts = [c for ws in workbook for row in ws.iter_rows() for c in row if c.value is not None]
    assert all(c.data_type != "f" for c in texts)
    risky = [
        c.value for c in texts if isinstance(c.value, str) and re.match(r"'?[=+\-@\t\r]", c.value)
    ]
    assert f"'{FORMULA_ID}" in risky
    assert "'@SUM(1+1)*cmd" in risky
    for value in risky:  # plain negative numbers may stay as they are; nothing else
        assert value.startswith("'") or re.fullmatch(r"-\d+(\.\d+)?", value)


def test_workbook_masks_personal_data(workbook: Any) -> None:
    values = {str(c.value) for ws in workbook for row in ws.iter_rows() for c in row}
    assert not any(OPENID in v or OTHER_OPENID in v or "津水" in v or "602***" in v for v in values)
    lm = _records(workbook["local_missing"])
    assert {r["对方账户"].value for r in lm} == {"**(6****@qq.com)"}
    assert {r["用户标识"].value for r in lm} == {"oU****6o"}
    old = next(
        r for r in _records(workbook["Open breaks"]) if r["merchant_order_id"].value == "RPT-OLD"
    )
    assert (old["buyer_id"].value, old["ledger_value"].value) == ("oU****6o", "oU****6o")


def test_workbook_summary_matches_the_report(workbook: Any, data: ReportData) -> None:
    rows = {(r["section"].value, r["item"].value): r for r in _records(workbook["Summary"])}
    assert data.match is not None
    assert rows[("match", "matched")]["count"].value == data.match.matched
    assert rows[("match", "rate")]["value"].value == data.match.percent
    for q in data.queues:
        assert rows[("queue", q.queue)]["count"].value == q.rows
        assert rows[("queue", q.queue)]["records"].value == q.records


def test_workbook_from_a_runs_own_queue_frames(
    store: Store, data: ReportData, tmp_path: Path
) -> None:
    """The pipeline may pass its in-memory queues (as in the run's Parquet files) instead."""
    frames = {q: pl.read_parquet(store.out / f"{q}.parquet") for q in QUEUES}
    write_xlsx(data, frames, tmp_path / "q.xlsx")
    wb = openpyxl.load_workbook(tmp_path / "q.xlsx")
    for queue, df in frames.items():
        recs = _records(wb[queue])
        assert [r["merchant_order_id"].value for r in recs] == df["merchant_order_id"].to_list()
        assert all(r["merchant_order_id"].data_type == "s" for r in recs)
        got = [Decimal(str(r["amount"].value)) for r in recs]
        assert got == [Decimal(a) for a in df["amount"].to_list()]


# --- bounded at scale ----------------------------------------------------------------------------

CAP = 3  # rows a sheet shows, small enough to cut this store's queues


@pytest.fixture(scope="module")
def capped(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("capped")
    write_reports(store.db, CH, DAY, out, sheet_rows=CAP, memory_limit="64MB", tz=TZ)
    return out


def test_long_queues_are_cut_in_the_workbook_with_a_note(
    capped: Path, store: Store, data: ReportData
) -> None:
    wb = openpyxl.load_workbook(capped / "queues.xlsx")
    summary = {(r["section"].value, r["item"].value): r for r in _records(wb["Summary"])}
    cut = 0
    for queue in QUEUES:
        ((total,),) = query(
            store.db,
            "SELECT count(*) FROM queue_items WHERE queue = ? AND business_date = ?",
            [queue, DAY],
        )
        first = [
            r[0]
            for r in query(
                store.db,
                "SELECT merchant_order_id FROM queue_items WHERE queue = ? AND business_date = ? "
                "ORDER BY bill_line NULLS LAST, ledger_row NULLS LAST, field LIMIT ?",
                [queue, DAY, CAP],
            )
        ]
        ws = wb[queue]
        rows = list(ws.iter_rows(values_only=True))
        if total > CAP:
            cut += 1
            note = str(rows[0][0])
            assert f"of {total:,}" in note
            assert f"{queue}.csv" in note
            assert f"{queue}.parquet" in note
            header, body = rows[1], rows[2:]
            assert ws.freeze_panes == "A3"
            assert str(ws.auto_filter.ref).startswith("A2:")
            assert str(ws.auto_filter.ref).endswith(str(CAP + 2))
        else:
            header, body = rows[0], rows[1:]
        assert [r[header.index("merchant_order_id")] for r in body] == first
        sheet = summary[("sheet", queue)]
        assert sheet["count"].value == min(total, CAP)
        assert f"{total:,}" in sheet["value"].value
    assert cut  # the cap did cut a queue
    rows = list(wb["Open breaks"].iter_rows(values_only=True))
    assert f"{data.open_count:,} open breaks" in str(rows[0][0])
    header = rows[1]
    listed = [str(r[header.index("merchant_order_id")]).removeprefix("'") for r in rows[2:]]
    assert listed == [b.merchant_order_id for b in data.open_breaks[:CAP]]


def test_report_html_says_where_the_full_queues_are(
    capped: Path, store: Store, data: ReportData
) -> None:
    html = (capped / "report.html").read_text(encoding="utf-8")
    metrics = html_metrics(html)
    cut = [q.queue for q in data.queues if q.rows > CAP]
    assert cut
    for queue in cut:
        assert metrics.pop(f"{queue}.sheet_rows") == str(CAP)
        assert f"{queue}.csv" in html
        assert f"{queue}.parquet" in html
    assert metrics.pop("open.sheet_rows") == str(CAP)
    assert metrics == expected_metrics(store.db)  # every other figure as without the cap
    # The HTML's own list of the largest is not cut by the sheets' cap.
    assert html.count("data-break-id=") == min(data.top, data.open_count)


def test_reports_never_read_the_stores_bill_rows(store: Store, tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    shutil.copy(store.db, db)
    with duckdb.connect(str(db)) as con:
        con.execute("DROP TABLE bill_rows")
    html, _ = write_reports(db, CH, DAY, tmp_path / "r", tz=TZ)
    assert html_metrics(html.read_text(encoding="utf-8")) == expected_metrics(store.db)


def test_cells_keep_their_text_and_types_through_the_xml(data: ReportData, tmp_path: Path) -> None:
    at = dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC)
    long = "y" * 40_000
    texts = [
        "00012345", "  padded ", "a\x01b", "_x0041_", "cr\rlf\n", long, "<b>&amp;</b>",
        "=1+1", "", None,
    ]  # fmt: skip
    amounts = ["12.50", "-0.01", "1,234.50", "123456789012345678.00", "abc", "12.", ".5", "0.000",
               "-1,5", None]  # fmt: skip
    n = len(texts)
    df = pl.DataFrame(
        {
            "merchant_order_id": texts,
            "amount": amounts,
            "amount_minor": [1, -1, 10**15, -(10**15) + 1, None, 0, 5, 6, 7, 8],
            "business_date": [DAY] * n,
            "settled_at": [at] * n,
            "flag": [True, False, None, True, True, True, True, True, True, True],
            "ratio": [1.5, None, float("inf"), 0.25, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    path = tmp_path / "cells.xlsx"
    write_xlsx(dataclasses.replace(data, queues=()), {"local_missing": df}, path)
    recs = _records(openpyxl.load_workbook(path)["local_missing"])
    assert len(recs) == n
    got = [r["merchant_order_id"].value for r in recs]
    assert got[:3] == ["00012345", "  padded ", "a\ufffdb"]
    assert got[4] == "cr\rlf\n"
    assert got[5] == "y" * 32_766 + "…"  # Excel's limit per cell
    assert got[6] == "<b>&amp;</b>"
    assert got[7] == "'=1+1"
    assert got[8:] == [None, None]
    assert all(r["merchant_order_id"].data_type == "s" for r in recs[:8])
    with zipfile.ZipFile(path) as z:  # Excel reads _xHHHH_ as a character: escaped
        assert "_x005F_x0041_" in z.read("xl/worksheets/sheet2.xml").decode()
    cells = [r["amount"] for r in recs]
    assert [(c.value, c.number_format) for c in cells[:3]] == [
        (12.5, "#,##0.00"), (-0.01, "#,##0.00"), (1234.5, "#,##0.00")
    ]  # fmt: skip
    assert [c.value for c in cells[3:5]] == ["123456789012345678.00", "abc"]  # text
    assert [(c.value, c.number_format) for c in cells[5:8]] == [
        (12, "#,##0"), (0.5, "#,##0.0"), (0, "#,##0.000")
    ]  # fmt: skip
    assert cells[8].value == "'-1,5"
    assert cells[9].value is None
    minors = [r["amount_minor"] for r in recs]
    assert (minors[0].value, minors[0].number_format) == (1, "0")
    assert minors[2].value == str(10**15)  # past 15 digits: text
    assert minors[3].value == -(10**15) + 1
    date = recs[0]["business_date"]
    assert (date.value, date.number_format) == (dt.datetime(2024, 3, 1), "yyyy-mm-dd")
    assert recs[0]["settled_at"].value == "2024-03-01T09:30:00+00:00"
    assert [r["flag"].value for r in recs[:3]] == ["true", "false", None]
    assert [r["ratio"].value for r in recs[:3]] == [1.5, None, "inf"]


def test_queue_files_from_a_lazy_frame_equal_those_from_a_frame(
    store: Store, tmp_path: Path
) -> None:
    """A queue may come as a LazyFrame over Parquet parts: streamed to the files, same bytes."""
    df = pl.read_parquet(store.out / "channel_missing.parquet")
    df = df.with_columns(merchant_refund_id=pl.lit("@SUM(1+1)*cmd"))
    assert df.height
    write_frame(df, tmp_path / "eager")
    write_frame(df.lazy(), tmp_path / "lazy")
    eager_csv = (tmp_path / "eager.csv").read_bytes()
    assert (tmp_path / "lazy.csv").read_bytes() == eager_csv
    assert b"'@SUM" in eager_csv  # neutralised
    assert pl.read_parquet(tmp_path / "lazy.parquet").equals(df)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("tz", "open_at_day_end"), [("Asia/Shanghai", "1"), ("Europe/Amsterdam", "0")]
)
def test_a_closing_before_any_run_falls_on_its_date_in_the_channels_zone(
    tmp_path: Path, tz: str, open_at_day_end: str
) -> None:
    """Resolved at 2024-02-29 20:00 UTC, before any run: 03-01 in Shanghai, still 02-29 in
    Amsterdam. The report of 02-29 shows it open or closed by the zone it is given."""
    db, day = tmp_path / "s.duckdb", dt.date(2024, 2, 29)
    closed_at = dt.datetime(2024, 2, 29, 20, tzinfo=dt.UTC)
    with open_store(db) as con:
        con.execute(
            "INSERT INTO break_items (break_id, channel, txn_type, merchant_order_id, "
            "merchant_refund_id, kind, business_date, state, amount_minor, currency, "
            "first_seen, last_seen, updated_at) VALUES (1, 'adyen', 'payment', 'Z1', '', "
            "'local_missing', ?, 'resolved', 100, 'EUR', ?, ?, ?)",
            [day, day, day, closed_at],
        )
        con.execute(
            "INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state) "
            "VALUES (?, 'analyst', 1, 'resolve', 'open', 'resolved')",
            [closed_at],
        )
    html, _ = write_reports(db, "adyen", day, tmp_path / "r", tz=tz)
    assert html_metrics(html.read_text(encoding="utf-8"))["open.count"] == open_at_day_end
