"""The reports' as-of table leaves out breaks closed long before the window: never one that
would show. Property: the table is the same with and without that shortcut."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from recon import report_data
from recon.report_data import TREND_DAYS
from recon.store import BREAK_STATES, CLOSED_STATES, migrate

DAY = dt.date(2024, 3, 1)
START = DAY - dt.timedelta(days=TREND_DAYS - 1)
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # times are minutes after this
MINUTES = 24 * 60 * 75  # to about two weeks after DAY


def minutes(n: int) -> dt.datetime:
    return BASE + dt.timedelta(minutes=n)


# A break: its business date, its state changes (minutes, new state; the audit entry is
# written a few seconds after the update, as recon.audit does), and maybe a later refresh
# of updated_at alone (a run seeing it again).
a_break = st.tuples(
    st.integers(0, (DAY - BASE.date()).days).map(lambda n: BASE.date() + dt.timedelta(days=n)),
    st.lists(st.tuples(st.integers(0, MINUTES), st.sampled_from(BREAK_STATES)), max_size=3),
    st.integers(0, 5),
    st.none() | st.integers(0, MINUTES),
)
# A run: its business day and when it started, early or late (a backfill, or a run of a day
# not yet over).
a_run = st.tuples(
    st.integers(0, (DAY - BASE.date()).days + 10).map(lambda n: BASE.date() + dt.timedelta(days=n)),
    st.integers(0, MINUTES),
)


def as_of(
    breaks: list[tuple[dt.date, list[tuple[int, str]], int, int | None]],
    runs: list[tuple[dt.date, int]],
    shortcut: bool,
    updated_at: dt.datetime | None = None,
) -> list[tuple[Any, ...]]:
    """The as-of table of a store of ``breaks`` and ``runs`` (``updated_at``: every break's,
    forced)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    migrate(con)
    for i, (bd, started) in enumerate(runs):
        con.execute(
            "INSERT INTO runs (run_id, channel, business_date, started_at) VALUES (?, 'wx', ?, ?)",
            [f"r{i}", bd, minutes(started)],
        )
    for i, (bd, changes, skew, refreshed) in enumerate(breaks):
        changes = sorted(changes)
        state, updated = (changes[-1][1], changes[-1][0]) if changes else ("open", 0)
        if refreshed is not None:
            updated = max(updated, refreshed)
        con.execute(
            "INSERT INTO break_items (break_id, channel, txn_type, merchant_order_id, "
            "merchant_refund_id, kind, business_date, state, amount_minor, currency, "
            "first_seen, last_seen, updated_at) "
            "VALUES (?, 'wx', 'payment', ?, '', 'local_missing', ?, ?, 100, 'CNY', ?, ?, ?)",
            [i, f"O{i}", bd, state, bd, bd, minutes(updated)],
        )
        before = "open"
        for at, to in changes:
            con.execute(
                "INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state) "
                "VALUES (?, 'a', ?, 'x', ?, ?)",
                [minutes(at) + dt.timedelta(seconds=skew), i, before, to],
            )
            before = to
    if updated_at is not None:
        con.execute("UPDATE break_items SET updated_at = ?", [updated_at])
    params = {
        "channel": "wx", "day": DAY, "tz": "Asia/Shanghai", "closed": list(CLOSED_STATES),
        "start": START,
    }  # fmt: skip
    sql = report_data._AS_OF.format(long_closed=report_data._LONG_CLOSED if shortcut else "")
    con.execute(sql, params)
    rows = con.execute(
        f"SELECT * EXCLUDE (age_days) FROM {report_data._AS_OF_TABLE} ORDER BY break_id"
    ).fetchall()
    return rows


@settings(max_examples=150, deadline=None)
@given(st.lists(a_break, max_size=12), st.lists(a_run, max_size=6))
def test_leaving_out_breaks_closed_long_ago_changes_nothing(
    breaks: list[tuple[dt.date, list[tuple[int, str]], int, int | None]],
    runs: list[tuple[dt.date, int]],
) -> None:
    assert as_of(breaks, runs, shortcut=True) == as_of(breaks, runs, shortcut=False)


def test_the_shortcut_trusts_updated_at_and_leaves_the_audit_log_unread() -> None:
    """A store never holds this: a break resolved in the window by its audit log, but last
    changed two months before it. Only the shortcut leaves it out, so this shows it is
    taken (and what it rests on: a break's closing is never after its updated_at, but for
    the day's margin)."""
    in_window = int((dt.datetime.combine(DAY, dt.time(), dt.UTC) - BASE).total_seconds() // 60)
    odd: tuple[dt.date, list[tuple[int, str]], int, int | None] = (
        BASE.date(), [(in_window - 5 * 24 * 60, "resolved")], 0, None,
    )  # fmt: skip
    # updated_at is the last change's time: move it back by hand after the insert
    ids = {
        shortcut: [r[0] for r in as_of([odd], [], shortcut=shortcut, updated_at=minutes(60))]
        for shortcut in (True, False)
    }
    assert ids == {True: [], False: [0]}


def test_a_closing_logged_just_after_the_window_opens_is_shown() -> None:
    """The audit entry is written just after the update: a break updated the second before
    the window's first local midnight and logged just after it closed on the window's
    first day, and shows. The shortcut's day of margin keeps it."""
    midnight = dt.datetime.combine(START, dt.time(), dt.UTC) - dt.timedelta(hours=8)
    at = int((midnight - BASE).total_seconds() // 60)
    late: tuple[dt.date, list[tuple[int, str]], int, int | None] = (
        BASE.date(), [(at, "resolved")], 3, None,
    )  # fmt: skip
    before = midnight - dt.timedelta(seconds=1)
    rows = as_of([late], [], shortcut=True, updated_at=before)
    assert [(r[0], r[5]) for r in rows] == [(0, START)]  # break_id, closed_day
    assert rows == as_of([late], [], shortcut=False, updated_at=before)
