"""The report's 30-day trend, as running sums, against a join of every day to every break."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from recon import report_data
from recon.report_data import TREND_DAYS, Tally, TrendPoint

DAY = dt.date(2024, 3, 1)
START = DAY - dt.timedelta(days=TREND_DAYS - 1)

# What the trend was before it became running sums: each day joined to the breaks open at
# its end. Quadratic, and plainly right.
REFERENCE = f"""
SELECT CAST(x AS DATE), currency, count(break_id), sum(amount_minor)
FROM generate_series($start, $day, INTERVAL 1 DAY) days(x)
LEFT JOIN {report_data._AS_OF_TABLE} ON business_date <= CAST(x AS DATE)
AND (closed_day IS NULL OR closed_day > CAST(x AS DATE)) GROUP BY ALL
"""


def days_from(lo: dt.date, hi: dt.date) -> st.SearchStrategy[dt.date]:
    return st.integers(0, (hi - lo).days).map(lambda n: lo + dt.timedelta(days=n))


# A row of the as-of table: its business date up to the day, closed (or not) on a day in
# the window or after it, maybe before its own business date; amounts and currencies that
# may be missing.
breaks = st.lists(
    st.tuples(
        days_from(START - dt.timedelta(days=40), DAY),
        st.none() | days_from(START, DAY + dt.timedelta(days=5)),
        st.sampled_from([None, "CNY", "USD"]),
        st.none() | st.integers(-(10**6), 10**9),
    ),
    max_size=40,
)


def trends(
    rows: Sequence[tuple[dt.date, dt.date | None, str | None, int | None]],
) -> tuple[tuple[TrendPoint, ...], tuple[TrendPoint, ...]]:
    con = duckdb.connect()
    con.execute(
        f"CREATE TEMP TABLE {report_data._AS_OF_TABLE} (break_id BIGINT, business_date DATE, "
        "closed_day DATE, currency VARCHAR, amount_minor BIGINT)"
    )
    for i, r in enumerate(rows):
        con.execute(f"INSERT INTO {report_data._AS_OF_TABLE} VALUES (?, ?, ?, ?, ?)", [i, *r])
    got = report_data._trend(con, DAY)
    by_day = report_data._tallies(con.execute(REFERENCE, {"start": START, "day": DAY}).fetchall())
    window = (START + dt.timedelta(days=n) for n in range(TREND_DAYS))
    want = tuple(TrendPoint(d, by_day.get((d,), Tally(0, ()))) for d in window)
    return got, want


@settings(max_examples=200, deadline=None)
@given(breaks)
def test_running_sums_equal_joining_each_day_to_every_break(
    rows: list[tuple[dt.date, dt.date | None, str | None, int | None]],
) -> None:
    got, want = trends(rows)
    assert got == want


def test_a_day_whose_open_breaks_have_no_amount_shows_none() -> None:
    rows = [
        (START, DAY - dt.timedelta(days=3), "CNY", 500),  # closed: its amount leaves
        (START, None, "CNY", None),  # open without an amount: counted only
    ]
    got, want = trends(rows)
    assert got == want
    last = got[-1].tally
    assert (last.count, last.amounts) == (1, ())
