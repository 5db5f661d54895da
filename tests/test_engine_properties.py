"""Invariants of the both-ways diff, over generated sides (hypothesis)."""

from __future__ import annotations

from collections import Counter

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.engine import diff
from recon.sides import KEY, SIDE_SCHEMA

# A small key space so that overlaps, duplicates and collisions are common.
record = st.tuples(
    st.sampled_from(["payment", "refund"]),
    st.sampled_from(["1", "01", "A", "1E5", "0"]),
    st.sampled_from(["", "r1"]),
    st.sampled_from(["", "T1", "T2"]),
    st.integers(0, 3),
    st.sampled_from(["CNY", "JPY"]),
    st.sampled_from(["SUCCESS", "CLOSED"]),
)
records = st.lists(record, max_size=25)


def side(rows: list[tuple[str, str, str, str, int, str, str]], origin: str) -> pl.DataFrame:
    data = [
        (t, o, r, x, a, 0 if c == "JPY" else 2, c, s, origin, i + 1)
        for i, (t, o, r, x, a, c, s) in enumerate(rows)
    ]
    return pl.DataFrame(data, schema=SIDE_SCHEMA, orient="row")


def keys(df: pl.DataFrame) -> Counter[tuple[str, ...]]:
    return Counter(tuple(r) for r in df.select(KEY).iter_rows())


@settings(max_examples=60, deadline=None)
@given(records)
def test_a_bill_against_itself_has_no_break(
    rows: list[tuple[str, str, str, str, int, str, str]],
) -> None:
    s = side(rows, "x")
    r = diff(s, s, settled_statuses=["SUCCESS", "CLOSED"], keep_matched=True)
    assert r.unmatched.height == 0
    assert r.mismatches.height == 0
    assert r.counts["matched"] == len(rows)


@settings(max_examples=60, deadline=None)
@given(records, records)
def test_swapping_sides_swaps_the_missing_queues(
    a: list[tuple[str, str, str, str, int, str, str]],
    b: list[tuple[str, str, str, str, int, str, str]],
) -> None:
    everything = ["SUCCESS", "CLOSED"]
    ab = diff(side(a, "a"), side(b, "b"), settled_statuses=everything)
    ba = diff(side(b, "b"), side(a, "a"), settled_statuses=everything)
    assert keys(ab.outcome("local_missing")) == keys(ba.outcome("channel_missing"))
    assert keys(ab.outcome("channel_missing")) == keys(ba.outcome("local_missing"))
    assert comparable(ab.mismatches, "l_val", "b_val").equals(
        comparable(ba.mismatches, "b_val", "l_val")
    )


def comparable(mismatches: pl.DataFrame, ledger: str, channel: str) -> pl.DataFrame:
    """Mismatch rows as (key, field, ledger value, channel value), sorted.

    An empty ledger channel_txn_id means unknown and is never a mismatch, so a
    channel_txn_id row with an empty value on either side has no mirror image.
    """
    out = mismatches.select(
        *KEY, "field", pl.col(ledger).alias("ledger"), pl.col(channel).alias("channel")
    )
    one_sided = (pl.col("field") == "channel_txn_id") & (
        (pl.col("ledger").fill_null("") == "") | (pl.col("channel").fill_null("") == "")
    )
    return out.filter(~one_sided).sort(pl.all())


@settings(max_examples=60, deadline=None)
@given(records, records)
def test_every_row_lands_in_exactly_one_outcome(
    ledger_rows: list[tuple[str, str, str, str, int, str, str]],
    bill_rows: list[tuple[str, str, str, str, int, str, str]],
) -> None:
    ledger, bill = side(ledger_rows, "l"), side(bill_rows, "b")
    r = diff(ledger, bill, settled_statuses=["SUCCESS"], keep_matched=True)
    matched = r.outcome("matched")
    bill_lines = Counter(
        matched["bill_line"].to_list() + r.outcome("local_missing")["bill_line"].to_list()
    )
    ledger_lines = Counter(
        matched["ledger_row"].to_list()
        + r.outcome("channel_missing")["ledger_row"].to_list()
        + r.outcome("ledger_unsettled")["ledger_row"].to_list()
    )
    assert bill_lines == Counter(range(1, len(bill_rows) + 1))
    assert ledger_lines == Counter(range(1, len(ledger_rows) + 1))
    # A key is only missing on one side when the other side has fewer copies of it.
    lk, bk = keys(ledger), keys(bill)
    for k in keys(r.outcome("local_missing")):
        assert bk[k] > lk[k]
    for k in keys(r.outcome("channel_missing")) + keys(r.outcome("ledger_unsettled")):
        assert lk[k] > bk[k]
    # Unsettled ledger rows never show up as channel_missing.
    assert set(r.outcome("channel_missing").select(pl.col("l_status")).to_series()) <= {"SUCCESS"}
