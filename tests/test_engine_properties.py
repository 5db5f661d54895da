"""Invariants of the both-ways diff, over generated sides (hypothesis)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import polars as pl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recon import engine
from recon.duck import work_connection
from recon.engine import DiffResult, diff
from recon.parts import sql_source, write_part
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


Row = tuple[str, str, str, str, int, str, str]


def reference(
    ledger: list[Row], bill: list[Row], settled: set[str]
) -> tuple[Counter[str], Counter[tuple[object, ...]], Counter[tuple[object, ...]]]:
    """The diff spelt out row by row: (counts, unmatched pairings, mismatch rows)."""

    def numbered(rows: list[Row]) -> dict[tuple[str, str, str, int], tuple[int, Row]]:
        seen: Counter[tuple[str, str, str]] = Counter()
        out = {}
        for line, row in enumerate(rows, 1):
            seen[row[:3]] += 1
            out[(*row[:3], seen[row[:3]])] = (line, row)
        return out

    def value(amount: int, currency: str) -> str:
        return str(amount * 10 ** (3 - (0 if currency == "JPY" else 2)))

    lside, bside = numbered(ledger), numbered(bill)
    counts: Counter[str] = Counter()
    unmatched: Counter[tuple[object, ...]] = Counter()
    mismatches: Counter[tuple[object, ...]] = Counter()
    for key in lside.keys() | bside.keys():
        if key in lside and key in bside:
            (l_line, (_, _, _, lx, la, lc, ls)), (b_line, (_, _, _, bx, ba, bc, bs)) = (
                lside[key],
                bside[key],
            )
            counts["matched"] += 1
            fields = [
                ("amount", value(la, lc), value(ba, bc)),
                ("currency", lc, bc),
                ("status", ls, bs),
                ("channel_txn_id", lx or None, bx),
            ]
            for field, lv, bv in fields:
                if lv is not None and lv != bv:
                    mismatches[(*key, l_line, b_line, field, lv, bv)] += 1
        elif key in bside:
            counts["local_missing"] += 1
            unmatched[(*key, "local_missing", None, bside[key][0])] += 1
        else:
            line, row = lside[key]
            outcome = "channel_missing" if row[6] in settled else "ledger_unsettled"
            counts[outcome] += 1
            unmatched[(*key, outcome, line, None)] += 1
    return counts, unmatched, mismatches


@settings(max_examples=80, deadline=None)
@given(records, records, st.booleans())
def test_the_diff_is_the_row_by_row_reference(
    ledger_rows: list[Row], bill_rows: list[Row], keep_matched: bool
) -> None:
    r = diff(side(ledger_rows, "l"), side(bill_rows, "b"), ["SUCCESS"], keep_matched=keep_matched)
    counts, unmatched, mismatches = reference(ledger_rows, bill_rows, {"SUCCESS"})
    assert r.counts == dict.fromkeys(r.counts, 0) | dict(counts)
    key = list(SIDE_SCHEMA)[:3]  # the key parts in the order side() fills them
    got = r.unmatched.select(*key, "occ", "outcome", "ledger_row", "bill_line").rows()
    assert Counter(got) == unmatched
    cols = [*key, "occ", "ledger_row", "bill_line", "field", "l_val", "b_val"]
    assert Counter(r.mismatches.select(cols).rows()) == mismatches
    assert r.mismatches.select("bill_line", "field").equals(
        r.mismatches.select("bill_line", "field").sort("bill_line", "field")
    )


def same(a: DiffResult, b: DiffResult) -> None:
    assert a.counts == b.counts
    for x, y in ((a.unmatched, b.unmatched), (a.mismatches, b.mismatches)):
        assert x.schema == y.schema
        assert x.sort(pl.all(), nulls_last=True).equals(y.sort(pl.all(), nulls_last=True))
    assert (a.matched is None) == (b.matched is None)
    if a.matched is not None and b.matched is not None:
        assert a.matched.sort(pl.all()).equals(b.matched.sort(pl.all()))


@settings(max_examples=40, deadline=None)
@given(records, records, st.booleans())
def test_colliding_key_hashes_change_nothing(
    ledger_rows: list[Row], bill_rows: list[Row], keep_matched: bool
) -> None:
    """The first join is on a hash of the key: with a hash that makes every key of a
    type collide, the diff falls back to the key itself and gives the same result."""
    ledger, bill = side(ledger_rows, "l"), side(bill_rows, "b")
    exact = diff(ledger, bill, ["SUCCESS"], keep_matched=keep_matched)
    with mock.patch.object(engine, "_KEY_HASH", "hash(txn_type)"):
        weak = diff(ledger, bill, ["SUCCESS"], keep_matched=keep_matched)
    same(weak, exact)


@settings(max_examples=30, deadline=None)
@given(records, records, st.integers(1, 3))
def test_sides_as_queries_over_parquet_parts_diff_as_frames(
    ledger_rows: list[Row], bill_rows: list[Row], parts: int
) -> None:
    ledger, bill = side(ledger_rows, "l"), side(bill_rows, "b")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        con = work_connection(folder / "duck", "128MB")
        try:
            sides = (
                parts_query(ledger, folder / "l", parts),
                parts_query(bill, folder / "b", parts),
            )
            got = diff(*sides, ["SUCCESS"], con)
        finally:
            con.close()
    same(got, diff(ledger, bill, ["SUCCESS"]))


def parts_query(df: pl.DataFrame, stem: Path, parts: int) -> str:
    """A query over ``df`` written as ``parts`` Parquet parts (``stem``-i.parquet)."""
    step = max(1, -(-df.height // parts))
    files = [
        write_part(df.slice(i * step, step), stem.with_name(f"{stem.name}-{i}.parquet"))
        for i in range(parts)
    ]
    return f"SELECT * FROM {sql_source(files)}"


# Rows with what real sides seldom have: a missing key part, a line shared by rows (as
# across a bill's files) or missing, an empty or missing channel_txn_id.
odd_record = st.tuples(
    st.sampled_from(["payment", None]),
    st.sampled_from(["1", "A", None]),
    st.sampled_from(["", "r1"]),
    st.sampled_from(["", "T1", None]),
    st.integers(0, 2),
    st.sampled_from(["CNY", "JPY", None]),
    st.sampled_from(["SUCCESS", "CLOSED", None]),
    st.sampled_from([1, 2, None]),
)


# A key hash every key of a type shares, NULL (as the real one) for a key with a NULL part.
_WEAK_HASH = engine._KEY_HASH.replace(
    "hash(txn_type, merchant_order_id, merchant_refund_id)", "hash(txn_type)"
)
assert _WEAK_HASH != engine._KEY_HASH


def odd_side(rows: list[tuple[object, ...]], origin: str) -> pl.DataFrame:
    """Odd records as a side; a row's file is ``origin`` and its place in the list (two
    files, so lines also repeat across files)."""
    data = [
        (o, r, t, x, a, None if c is None else 0 if c == "JPY" else 2, c, s, f"{origin}{i % 2}", n)
        for i, (t, o, r, x, a, c, s, n) in enumerate(rows)
    ]
    return pl.DataFrame(data, schema=SIDE_SCHEMA, orient="row")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(odd_record, max_size=20),
    st.lists(odd_record, max_size=20),
    st.booleans(),
    st.booleans(),
)
# Copies of a key with and without a line, paired by a path (hash collision) that numbers
# them in DuckDB, not polars: both must put the row with no line last.
@example(
    [("payment", "1", "", "", 0, "CNY", "SUCCESS", 1)],
    [
        ("payment", "1", "r1", "", 0, "CNY", "SUCCESS", 1),
        ("payment", "1", "r1", "", 0, "CNY", "SUCCESS", None),
        ("payment", "A", "", "", 0, "CNY", "SUCCESS", 1),
    ],
    True,
    False,
)
# A wanted ledger row (alone) and a matched one share a line, in the side's two files.
@example(
    [
        ("payment", "1", "", "", 0, "CNY", "SUCCESS", 1),
        ("payment", "A", "", "", 0, "CNY", "SUCCESS", 1),
    ],
    [("payment", "A", "", "", 0, "CNY", "SUCCESS", 2)],
    False,
    True,
)
def test_the_narrow_first_pass_changes_nothing(
    ledger_rows: list[tuple[object, ...]],
    bill_rows: list[tuple[object, ...]],
    weak: bool,
    as_parts: bool,
) -> None:
    """Without keep_matched, only the rows of keys that may not pair off equal are
    paired whole (recon.narrow): the same breaks as pairing every row whole. The sides
    are of two files, so a wanted row's line also names other keys' rows; frames or
    queries over Parquet parts; and with a key hash every key of a type shares
    (``weak``) as well as with the real one."""
    ledger, bill = odd_side(ledger_rows, "l"), odd_side(bill_rows, "b")
    whole = diff(ledger, bill, ["SUCCESS"], keep_matched=True)
    whole.matched = None
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(engine, "_KEY_HASH", _WEAK_HASH if weak else engine._KEY_HASH),
    ):
        folder = Path(tmp)
        con = work_connection(folder / "duck", "128MB")
        try:
            sides: tuple[pl.DataFrame | str, pl.DataFrame | str] = (ledger, bill)
            if as_parts:
                sides = (parts_query(ledger, folder / "l", 2), parts_query(bill, folder / "b", 2))
            same(diff(*sides, ["SUCCESS"], con), whole)
        finally:
            con.close()
