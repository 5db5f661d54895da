"""Fuzz the fast paths of the recon path against the exact reference implementations.

``python -m bench.equivalence [--examples 300]``

The hot-spot fixes (fast paths in recon.money, parsers.common.read_lines, the WeChat
control-total sum, the two-step diff in recon.engine) must not change behaviour. The
unit tests pin the documented cases; this drives many generated inputs through both
the fast code and a reference (the code as it was) and fails on the first difference.
Not part of the unit test run: it takes a minute or two.
"""

from __future__ import annotations

import argparse
import codecs
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.common import decode, read_lines, split_lines
from parsers.wechatpay import decimal_sum
from recon.currency import CURRENCY_EXPONENTS
from recon.engine import _MISMATCH_SQL, OUTCOMES, DiffResult, diff
from recon.ledger_time import _exact_normalised, _normalised_created_at
from recon.money import _exact_minor, decimal_or_none, to_minor, to_minor_by_currency
from recon.sides import SIDE_SCHEMA

# --- references: the code before the fast paths ------------------------------------------


def reference_by_currency(value: pl.Expr, currency: pl.Expr) -> pl.Expr:
    out: pl.Expr = pl.lit(None, pl.Int64)
    for exp in sorted(set(CURRENCY_EXPONENTS.values())):
        codes = [c for c, e in CURRENCY_EXPONENTS.items() if e == exp]
        out = pl.when(currency.is_in(codes)).then(_exact_minor(value, exp)).otherwise(out)
    return out


def reference_decimal_sum(values: pl.Series) -> Decimal:
    total = Decimal(0)
    for value, count in values.drop_nulls().value_counts().iter_rows():
        number = decimal_or_none(value)
        if number is not None:
            total += number * count
    return total


_REFERENCE_SQL = """
WITH
l AS (
  SELECT *, row_number() OVER (
    PARTITION BY txn_type, merchant_order_id, merchant_refund_id ORDER BY origin_line) AS occ
  FROM ledger_side),
b AS (
  SELECT *, row_number() OVER (
    PARTITION BY txn_type, merchant_order_id, merchant_refund_id ORDER BY origin_line) AS occ
  FROM bill_side)
SELECT
  coalesce(b.txn_type, l.txn_type) AS txn_type,
  coalesce(b.merchant_order_id, l.merchant_order_id) AS merchant_order_id,
  coalesce(b.merchant_refund_id, l.merchant_refund_id) AS merchant_refund_id,
  coalesce(b.occ, l.occ) AS occ,
  CASE
    WHEN b.txn_type IS NULL AND list_contains($settled, l.status) THEN 'channel_missing'
    WHEN b.txn_type IS NULL THEN 'ledger_unsettled'
    WHEN l.txn_type IS NULL THEN 'local_missing'
    ELSE 'matched'
  END AS outcome,
  l.channel_txn_id AS l_channel_txn_id, b.channel_txn_id AS b_channel_txn_id,
  l.amount_minor AS l_amount_minor, b.amount_minor AS b_amount_minor,
  l.exponent AS l_exponent, b.exponent AS b_exponent,
  l.currency AS l_currency, b.currency AS b_currency,
  l.status AS l_status, b.status AS b_status,
  l.origin_file AS ledger_file, l.origin_line AS ledger_row,
  b.origin_file AS bill_file, b.origin_line AS bill_line
FROM b FULL OUTER JOIN l USING (txn_type, merchant_order_id, merchant_refund_id, occ)
"""


def reference_diff(
    ledger: pl.DataFrame, bill: pl.DataFrame, settled: Sequence[str], keep_matched: bool
) -> DiffResult:
    """recon.engine.diff as it was: the whole join materialized in DuckDB."""
    con = duckdb.connect()
    con.register("ledger_side", ledger.select(list(SIDE_SCHEMA)))
    con.register("bill_side", bill.select(list(SIDE_SCHEMA)))
    con.sql(f"CREATE TEMP TABLE joined AS {_REFERENCE_SQL}", params={"settled": list(settled)})
    rows = con.sql("SELECT outcome, count(*) FROM joined GROUP BY ALL").fetchall()
    counts = dict.fromkeys(OUTCOMES, 0) | {str(k): int(n) for k, n in rows}
    unmatched = con.sql("SELECT * FROM joined WHERE outcome <> 'matched'").pl()
    mismatches = con.sql(_MISMATCH_SQL).pl()
    matched = (
        con.sql("SELECT * FROM joined WHERE outcome = 'matched'").pl() if keep_matched else None
    )
    con.close()
    return DiffResult(counts=counts, unmatched=unmatched, mismatches=mismatches, matched=matched)


# --- checks ------------------------------------------------------------------------------

AMOUNT_TEXT = st.text(alphabet="0123456789.,+- \t\n0０١e", max_size=22) | st.from_regex(
    r"\A[+-]?[0-9]{0,17}(\.[0-9]{0,7})?\Z"
)
CURRENCIES = st.sampled_from(["CNY", "JPY", "BHD", "KWD", "cny", "XXX", ""]) | st.none()


def check_money(examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.lists(st.tuples(AMOUNT_TEXT | st.none(), CURRENCIES), max_size=30))
    def run(pairs: list[tuple[str | None, str | None]]) -> None:
        df = pl.DataFrame(pairs, schema={"v": pl.String, "c": pl.String}, orient="row")
        for exp in (0, 2, 3):
            fast = df.select(to_minor(pl.col("v"), exp)).to_series().to_list()
            ref = df.select(_exact_minor(pl.col("v"), exp)).to_series().to_list()
            assert fast == ref, (exp, pairs, fast, ref)
        by_cur = pl.col("v"), pl.col("c")
        fast = df.select(to_minor_by_currency(*by_cur)).to_series().to_list()
        ref = df.select(reference_by_currency(*by_cur)).to_series().to_list()
        assert fast == ref, (pairs, fast, ref)

    run()
    # Whole columns in the fast forms, with and without a few odd values among them.
    plain = [f"{'-' if i % 3 == 0 else ''}{i}.{i % 100:02d}" for i in range(5000)]
    for extra in ([], ["1,234.50", " 7.00", "bad", None, "0.120", "+3.10", "-0.010", "12"]):
        df = pl.DataFrame(
            {"v": plain + extra, "c": ["CNY"] * (len(plain) - 1) + ["JPY"] * (1 + len(extra))}
        )
        for exp in (0, 2, 3):
            a = df.select(to_minor(pl.col("v"), exp)).to_series()
            assert a.equals(df.select(_exact_minor(pl.col("v"), exp)).to_series()), exp
        a = df.select(to_minor_by_currency(pl.col("v"), pl.col("c"))).to_series()
        b = df.select(reference_by_currency(pl.col("v"), pl.col("c"))).to_series()
        assert a.equals(b)
    print("money: to_minor and to_minor_by_currency equal the exact parser")


def check_decimal_sum(examples: int) -> None:
    values = AMOUNT_TEXT | st.from_regex(r"\A-?[0-9]{1,15}\.[0-9]{1,9}\Z")

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.lists(values | st.none(), max_size=40))
    def run(texts: list[str | None]) -> None:
        s = pl.Series("v", texts, dtype=pl.String)
        fast, ref = decimal_sum(s), reference_decimal_sum(s)
        assert fast == ref, (texts, fast, ref)
        assert str(fast) == str(ref), (texts, fast, ref)

    run()
    print("decimal_sum: equal to the Decimal loop, exponent included")


def check_lines(examples: int) -> None:
    chunk = st.sampled_from(["a", ",`", "\n", "\r", "\r\n", "中", "", "\x00", "\ufeff"])
    encodings = st.sampled_from(["utf-8", "utf-8-sig", "gb18030"])

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.lists(chunk, max_size=30), encodings, st.binary(max_size=4) | st.just(b""))
    def run(parts: list[str], enc: str, junk: bytes) -> None:
        data = "".join(parts).encode(enc) + junk
        path = Path("x.csv")
        try:
            ref: pl.DataFrame | str = split_lines(decode(path, data))
        except Exception as exc:  # the same error, or none, from both
            ref = repr(exc)
        try:
            fast: pl.DataFrame | str = read_lines(path, data)
        except Exception as exc:
            fast = repr(exc)
        if isinstance(ref, str) or isinstance(fast, str):
            assert ref == fast, (data, ref, fast)
        else:
            assert fast.equals(ref), (data, fast, ref)

    run()
    bom = codecs.BOM_UTF8 + b"a\r\nb"
    assert read_lines(Path("x"), bom).equals(split_lines(decode(Path("x"), bom)))
    print("read_lines: equal to split_lines(decode(...))")


def check_created_at(examples: int) -> None:
    piece = st.sampled_from(
        ["2024-03-01", "T", " ", "12:34:56", "12:34", ".123", "Z", "z", "+08:00", "+0800",
         "+08", "-05:00", "\t", "２", "0"]
    )  # fmt: skip
    iso = st.lists(piece, max_size=6).map("".join)

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.lists(iso | st.none(), max_size=20))
    def run(texts: list[str | None]) -> None:
        df = pl.DataFrame({"v": texts}, schema={"v": pl.String})
        fast = df.select(_normalised_created_at(pl.col("v"))).to_series()
        ref = df.select(_exact_normalised(pl.col("v"))).to_series()
        assert fast.equals(ref), (texts, fast.to_list(), ref.to_list())

    run()
    canonical = ["2024-03-01T12:34:56+08:00", "2024-03-01T12:34:56.5Z", "2024-03-01T00:00:00Z"]
    df = pl.DataFrame({"v": canonical * 100})
    fast = df.select(_normalised_created_at(pl.col("v"))).to_series()
    assert fast.equals(df.select(_exact_normalised(pl.col("v"))).to_series())
    print("ledger created_at: equal to the regex chain")


def _side(rows: list[tuple[object, ...]], origin: str) -> pl.DataFrame:
    data = [(*r[:4], r[4], r[5], r[6], r[7], origin, i + 1) for i, r in enumerate(rows)]
    return pl.DataFrame(data, schema=SIDE_SCHEMA, orient="row")


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(pl.all(), nulls_last=True)


def check_diff(examples: int) -> None:
    record = st.tuples(
        st.sampled_from(["payment", "refund"]) | st.none(),
        st.sampled_from(["1", "01", "A", "1E5"]) | st.none(),
        st.sampled_from(["", "r1"]),
        st.sampled_from(["", "T1", "T2"]) | st.none(),
        st.integers(0, 3) | st.none(),
        st.sampled_from([0, 2, 3, 4]) | st.none(),
        st.sampled_from(["CNY", "JPY"]) | st.none(),
        st.sampled_from(["SUCCESS", "CLOSED"]) | st.none(),
    )
    records = st.lists(record, max_size=25)

    @settings(max_examples=examples, deadline=None, database=None)
    @given(records, records, st.booleans())
    def run(a: list[tuple[object, ...]], b: list[tuple[object, ...]], keep: bool) -> None:
        ledger, bill = _side(a, "l"), _side(b, "b")
        settled = ["SUCCESS"]
        fast = diff(ledger, bill, settled, keep_matched=keep)
        ref = reference_diff(ledger, bill, settled, keep)
        assert fast.counts == ref.counts
        assert fast.unmatched.schema == ref.unmatched.schema
        assert _sorted(fast.unmatched).equals(_sorted(ref.unmatched))
        assert fast.mismatches.schema == ref.mismatches.schema
        assert _sorted(fast.mismatches).equals(_sorted(ref.mismatches))
        order = ["bill_line", "field"]
        assert fast.mismatches.select(order).equals(ref.mismatches.select(order))
        if keep:
            assert fast.matched is not None
            assert ref.matched is not None
            assert fast.matched.schema == ref.matched.schema
            assert _sorted(fast.matched).equals(_sorted(ref.matched))

    run()
    print("diff: equal to the materialized reference join")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300)
    a = ap.parse_args(argv)
    check_money(a.examples)
    check_decimal_sum(a.examples)
    check_lines(a.examples)
    check_created_at(a.examples)
    check_diff(a.examples)


if __name__ == "__main__":
    main()
