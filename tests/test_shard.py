"""recon.shard: K hash shards of a channel-day diff to exactly the unsharded result."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.generate import generate, write_day
from recon.duck import work_connection
from recon.engine import DiffResult, diff
from recon.ledger import load_ledger_day
from recon.pipeline import parse_bill
from recon.rules import load_rules
from recon.shard import (
    diff_shard,
    diff_sharded,
    merge_results,
    read_result,
    shard_ids,
    shard_of_key,
    split,
    write_result,
    write_shards,
)
from recon.sides import KEY, SIDE_SCHEMA, bill_side, bill_side_sql, ledger_side_sql
from tests.test_engine_properties import side

# A small key space, so that repeated keys on one side and overlaps are common.
record = st.tuples(
    st.sampled_from(["payment", "refund"]),
    st.sampled_from(["1", "01", "A", "1E5", "0", "中"]),
    st.sampled_from(["", "r1", "r2"]),
    st.sampled_from(["", "T1", "T2"]),
    st.integers(0, 3),
    st.sampled_from(["CNY", "JPY"]),
    st.sampled_from(["SUCCESS", "CLOSED"]),
)
records = st.lists(record, max_size=30)


def ordered(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(pl.all(), nulls_last=True)


def assert_same(sharded: DiffResult, whole: DiffResult) -> None:
    assert sharded.counts == whole.counts
    assert sharded.unmatched.schema == whole.unmatched.schema
    assert ordered(sharded.unmatched).equals(ordered(whole.unmatched))
    assert sharded.mismatches.schema == whole.mismatches.schema
    assert ordered(sharded.mismatches).equals(ordered(whole.mismatches))
    if whole.matched is not None:
        assert sharded.matched is not None
        assert ordered(sharded.matched).equals(ordered(whole.matched))


@settings(max_examples=60, deadline=None)
@given(records, records, st.integers(1, 5), st.booleans())
def test_sharded_diff_equals_the_whole_diff(
    ledger_rows: list[tuple[str, str, str, str, int, str, str]],
    bill_rows: list[tuple[str, str, str, str, int, str, str]],
    k: int,
    keep_matched: bool,
) -> None:
    ledger, bill = side(ledger_rows, "l"), side(bill_rows, "b")
    whole = diff(ledger, bill, ["SUCCESS"], keep_matched=keep_matched)
    sharded = diff_sharded(ledger, bill, ["SUCCESS"], k, keep_matched=keep_matched)
    assert_same(sharded, whole)


@settings(max_examples=30, deadline=None)
@given(records, st.integers(1, 5))
def test_every_copy_of_a_key_is_in_one_shard(
    rows: list[tuple[str, str, str, str, int, str, str]], k: int
) -> None:
    s = side(rows, "x")
    ids = s.select(KEY).with_columns(shard_ids(s, k))
    assert (ids.group_by(KEY).agg(pl.col("shard").n_unique())["shard"] <= 1).all()
    parts = split(s, k)
    assert len(parts) == k
    assert sum(p.height for p in parts) == s.height


def test_shard_is_md5_of_the_key_and_stable() -> None:
    keys = [("payment", "00012345", ""), ("refund", "123E4", "R1-0"), ("payment", "中文", "")]
    df = pl.DataFrame(keys, schema=dict.fromkeys(KEY, pl.String), orient="row")
    for k in (1, 2, 3, 7, 64):
        expected = [shard_of_key(*key, k) for key in keys]
        assert shard_ids(df, k).to_list() == expected
    # Pinned: a change of hash would move keys between shards written by another version.
    assert shard_of_key("payment", "00012345", "", 1000) == 495
    assert shard_of_key("refund", "123E4", "R1-0", 7) == 3


def test_shard_of_a_missing_key_part_is_that_of_an_empty_one() -> None:
    df = pl.DataFrame(
        {"txn_type": ["payment"], "merchant_order_id": [None], "merchant_refund_id": [""]}
    )
    assert shard_ids(df.cast(pl.String), 5).to_list() == [shard_of_key("payment", "", "", 5)]


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        shard_ids(side([], "x"), 0)


DAY = dt.date(2024, 3, 1)


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_day(generate(DAY, 300, seed=5), DAY, tmp_path_factory.mktemp("day"))


@pytest.mark.parametrize("channel", ["wechatpay", "alipay"])
def test_a_generated_day_sharded_through_files_equals_the_whole(
    channel: str, day_files: dict[str, Path], tmp_path: Path
) -> None:
    rules = load_rules()
    ch = rules.channel(channel)
    bill = parse_bill(ch, day_files[channel], work_dir=tmp_path / "bill")
    ledger = load_ledger_day(day_files["ledger"], ch.name, ch.timezone, DAY, tmp_path / "ledger")
    lquery, bquery = ledger_side_sql(ledger.rows_files), bill_side_sql(bill.rows_files)
    con = work_connection(tmp_path / "duck", "256MB")
    whole = diff(lquery, bquery, ch.settled_statuses, con)
    assert whole.counts["local_missing"] > 0  # the generated day has breaks of each kind
    assert whole.counts["channel_missing"] > 0
    assert whole.mismatches.height > 0
    # The sides as frames diff as their queries do.
    lside = ledger.rows.collect().select(list(SIDE_SCHEMA))
    bside = bill_side(bill.rows.collect())
    assert_same(diff(lside, bside, ch.settled_statuses), whole)
    assert_same(diff_sharded(lside, bside, ch.settled_statuses, 3), whole)
    # As the mapped tasks do it: shard files, one diff per shard, results through files.
    for _ in range(2):  # splitting again replaces the parts of the first split
        shards = write_shards(lquery, bquery, 4, tmp_path / "shards", con)
    assert [s["shard"] for s in shards] == ["0", "1", "2", "3"]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        f"shard-{i:03d}-of-004" for i in range(4)
    ]
    done = [
        write_result(diff_shard(s, ch.settled_statuses, con), tmp_path / "results" / s["shard"])
        for s in shards
    ]
    merged = merge_results(read_result(p) for p in done)
    assert_same(merged, whole)
    con.close()


def test_shards_without_rows_get_an_empty_part(tmp_path: Path) -> None:
    ledger = side([("payment", "1", "", "T1", 1, "CNY", "SUCCESS")], "l")
    bill = side(
        [
            ("payment", "1", "", "T1", 2, "CNY", "SUCCESS"),
            ("refund", "A", "r1", "", 1, "JPY", "SUCCESS"),
        ],
        "b",
    )
    shards = write_shards(ledger, bill, 7, tmp_path)
    rows = 0
    for s in shards:
        for name in ("ledger", "bill"):
            parts = sorted(Path(s[name]).glob("part-*.parquet"))
            assert parts
            got = pl.read_parquet(parts)
            assert got.schema == pl.Schema(SIDE_SCHEMA)
            rows += got.height
    assert rows == 3
    merged = merge_results(diff_shard(s) for s in shards)
    assert_same(merged, diff(ledger, bill))
