"""recon.money: exact decimal strings <-> integer minor units, never rounded, never float."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.currency import CURRENCY_EXPONENTS
from recon.money import (
    decimal_or_none,
    exponent_expr,
    format_minor,
    format_minor_expr,
    to_minor,
    to_minor_by_currency,
)

CURRENCY_OF_EXPONENT = {0: "JPY", 2: "CNY", 3: "BHD"}


def minor(values: list[str | None], exponent: int) -> list[int | None]:
    df = pl.DataFrame({"v": values}, schema={"v": pl.String})
    out: list[int | None] = df.select(to_minor(pl.col("v"), exponent).alias("out"))["out"].to_list()
    return out


def minor_by_currency(pairs: list[tuple[str | None, str | None]]) -> list[int | None]:
    df = pl.DataFrame(pairs, schema={"v": pl.String, "c": pl.String}, orient="row")
    out: list[int | None] = df.select(to_minor_by_currency(pl.col("v"), pl.col("c")).alias("out"))[
        "out"
    ].to_list()
    return out


def formatted(pairs: list[tuple[int | None, int | None]]) -> list[str | None]:
    df = pl.DataFrame(pairs, schema={"m": pl.Int64, "e": pl.Int64}, orient="row")
    out: list[str | None] = df.select(format_minor_expr(pl.col("m"), pl.col("e")).alias("out"))[
        "out"
    ].to_list()
    return out


def grouped(whole: str) -> str:
    """'1234567' -> '1,234,567' (leading zeros dropped, as a person writes it)."""
    return f"{int(whole):,}"


# --- to_minor: accepted spellings -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 1200),
        ("12.5", 1250),
        ("12.50", 1250),
        ("012.50", 1250),
        ("12.500", 1250),  # trailing zeros are not extra precision
        ("+12.50", 1250),
        ("-12.50", -1250),
        ("-0.01", -1),
        ("0.01", 1),
        ("0", 0),
        ("-0", 0),
        (".5", 50),
        ("1,234.50", 123450),
        ("-1,234.50", -123450),
        ("+1,234.50", 123450),
        ("1,234,567.89", 123456789),
        ("12,345", 1234500),
        (" 12.50 ", 1250),
        ("\t12.50\r\n", 1250),
        ("999999999999999.99", 99999999999999999),  # 15 integer digits: the limit
    ],
)
def test_to_minor_reads_exact_amounts_cny(text: str, expected: int) -> None:
    assert minor([text], 2) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "1e1",
        "1E2",
        "12.505",  # more decimals than CNY has: rejected, never rounded
        "12.501",
        "0.001",
        "abc",
        "12a",
        "12 .5",
        "--1",
        "+-1",
        "-",
        "+",
        ".",
        "1.2.3",
        "1,23.50",  # not a thousands grouping
        "1234,567.00",
        "12,34",
        ",123",
        "1_000",
        "NaN",
        "inf",
        "0x10",
        "1" * 16,  # integer part too long
        "1" * 19,
        "9" * 25,
        "1" * 16 + ".00",
    ],
)
def test_to_minor_rejects_what_is_not_an_exact_amount(text: str) -> None:
    assert minor([text], 2) == [None]


def test_to_minor_null_stays_null() -> None:
    assert minor([None, "1"], 2) == [None, 100]


@pytest.mark.parametrize(
    ("text", "exponent", "expected"),
    [
        ("12", 0, 12),
        ("12.0", 0, 12),
        ("12.00", 0, 12),
        ("1,234", 0, 1234),
        ("12.5", 0, None),
        ("0.1", 0, None),
        ("12.505", 3, 12505),
        ("12.5", 3, 12500),
        ("1,234.567", 3, 1234567),
        ("12.5051", 3, None),
        ("-0.001", 3, -1),
    ],
)
def test_to_minor_follows_the_exponent(text: str, exponent: int, expected: int | None) -> None:
    assert minor([text], exponent) == [expected]


def test_to_minor_is_row_by_row() -> None:
    texts: list[str | None] = ["12.50", "bad", None, "1,234.50", "12.505", "-0.01"]
    assert minor(texts, 2) == [1250, None, None, 123450, None, -1]


@pytest.mark.parametrize("text", ["１２.50", "١٢.50"])
def test_to_minor_non_ascii_digits_are_null_not_an_exception(text: str) -> None:
    assert minor([text, "1.00"], 2) == [None, 100]


@pytest.mark.parametrize("text", ["12.５0", "0.０１"])
def test_to_minor_non_ascii_fraction_digits_are_null_not_zero(text: str) -> None:
    assert minor([text], 2) == [None]


def test_to_minor_zero_padding_does_not_count_towards_the_digit_limit() -> None:
    assert minor(["0" * 14 + "12.50"], 2) == [1250]


# --- to_minor_by_currency --------------------------------------------------------------


def test_to_minor_by_currency_uses_each_rows_exponent() -> None:
    pairs: list[tuple[str | None, str | None]] = [
        ("12.50", "CNY"),
        ("12.505", "CNY"),
        ("12", "JPY"),
        ("12.5", "JPY"),
        ("1,234", "KRW"),
        ("12.505", "BHD"),
        ("12.5055", "BHD"),
        ("12.5", "KWD"),
        ("12.50", "XXX"),  # unknown currency -> null
        ("12.50", "cny"),  # codes are exact: callers upper-case first
        ("12.50", ""),
        ("12.50", None),
        (None, "CNY"),
    ]
    assert minor_by_currency(pairs) == [
        1250,
        None,
        12,
        None,
        1234,
        12505,
        None,
        12500,
        None,
        None,
        None,
        None,
        None,
    ]


def test_exponent_expr_known_and_unknown() -> None:
    df = pl.DataFrame({"c": ["CNY", "JPY", "BHD", "XXX", None]})
    assert df.select(exponent_expr(pl.col("c")).alias("out"))["out"].to_list() == [
        2,
        0,
        3,
        None,
        None,
    ]


def test_every_currency_has_a_plausible_exponent() -> None:
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3}
    assert all(len(c) == 3 and c.isupper() for c in CURRENCY_EXPONENTS)
    assert (CURRENCY_EXPONENTS["CNY"], CURRENCY_EXPONENTS["JPY"], CURRENCY_EXPONENTS["BHD"]) == (
        2,
        0,
        3,
    )


# --- format_minor / format_minor_expr --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        (1250, "CNY", "12.50"),
        (1, "CNY", "0.01"),
        (-1, "CNY", "-0.01"),
        (0, "CNY", "0.00"),
        (-123450, "CNY", "-1234.50"),
        (123456789, "CNY", "1234567.89"),
        (12, "JPY", "12"),
        (-12, "JPY", "-12"),
        (0, "JPY", "0"),
        (1, "BHD", "0.001"),
        (12505, "BHD", "12.505"),
        (-10, "BHD", "-0.010"),
        (10**17 + 1, "CNY", "1000000000000000.01"),
    ],
)
def test_format_minor(value: int, currency: str, expected: str) -> None:
    assert format_minor(value, currency) == expected


@pytest.mark.parametrize(
    ("value", "exponent", "expected"),
    [
        (1250, 2, "12.50"),
        (5, 2, "0.05"),
        (-5, 2, "-0.05"),
        (0, 2, "0.00"),
        (-1250, 0, "-1250"),
        (0, 0, "0"),
        (1, 3, "0.001"),
        (-12505, 3, "-12.505"),
        (None, 2, None),
        (5, None, None),
        (5, 4, None),  # no currency has 4 decimals
    ],
)
def test_format_minor_expr(value: int | None, exponent: int | None, expected: str | None) -> None:
    assert formatted([(value, exponent)]) == [expected]


# --- decimal_or_none (control totals) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234.50", Decimal("1234.50")),
        ("1234.50", Decimal("1234.50")),
        (" -3.10 ", Decimal("-3.10")),
        ("0.00000", Decimal("0")),
        ("9.07000", Decimal("9.07")),
        ("253464.12", Decimal("253464.12")),
    ],
)
def test_decimal_or_none_reads_exactly(text: str, expected: Decimal) -> None:
    got = decimal_or_none(text)
    assert got == expected
    assert isinstance(got, Decimal)


def test_decimal_or_none_keeps_every_digit() -> None:
    got = decimal_or_none("12345678901234567890.123456789")
    assert got is not None
    assert str(got) == "12345678901234567890.123456789"


@pytest.mark.parametrize(
    "text", ["", " ", "abc", "NaN", "nan", "Infinity", "-inf", "sNaN", "1.2.3"]
)
def test_decimal_or_none_rejects_non_numbers(text: str) -> None:
    assert decimal_or_none(text) is None


# --- properties --------------------------------------------------------------------------

EXPONENTS = st.sampled_from([0, 2, 3])


def _amounts(exponent: int) -> st.SearchStrategy[list[int]]:
    bound = 10 ** (15 + exponent) - 1  # 15 integer digits at most
    return st.lists(st.integers(-bound, bound), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(EXPONENTS.flatmap(lambda e: st.tuples(st.just(e), _amounts(e))))
def test_format_then_parse_round_trips(case: tuple[int, list[int]]) -> None:
    exponent, values = case
    currency = CURRENCY_OF_EXPONENT[exponent]
    texts: list[str | None] = [format_minor(m, currency) for m in values]
    assert minor(texts, exponent) == values
    assert formatted([(m, exponent) for m in values]) == texts
    pairs: list[tuple[str | None, str | None]] = [(t, currency) for t in texts]
    assert minor_by_currency(pairs) == values


@settings(max_examples=60, deadline=None)
@given(
    EXPONENTS,
    st.integers(0, 10**12 - 1),  # room for the leading zeros within 15 integer digits
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from(["", "+"]),
)
def test_spellings_of_one_amount_are_equal(
    exponent: int, m: int, extra_zeros: int, leading_zeros: int, sign: str
) -> None:
    """ "12.5" == "12.50" == "012.50" == "+12.50" == "1,234.50"-style grouping."""
    currency = CURRENCY_OF_EXPONENT[exponent]
    text = format_minor(m, currency)
    whole, _, frac = text.partition(".")
    variants = [
        text,
        "0" * leading_zeros + text,
        sign + text,
        text + ("." if not frac else "") + "0" * extra_zeros,
        (whole + "." + frac.rstrip("0")) if frac else whole,
        grouped(whole) + ("." + frac if frac else ""),
        "-" + grouped(whole) + ("." + frac if frac else ""),
    ]
    expected = [m] * (len(variants) - 1) + [-m]
    assert minor(list[str | None](variants), exponent) == expected


@settings(max_examples=60, deadline=None)
@given(EXPONENTS, st.integers(0, 10**12), st.integers(1, 9), st.integers(0, 2))
def test_more_decimals_than_the_exponent_is_null_never_rounded(
    exponent: int, m: int, last_digit: int, zeros: int
) -> None:
    currency = CURRENCY_OF_EXPONENT[exponent]
    text = format_minor(m, currency)
    if "." not in text:
        text += "."
    too_precise = text + "0" * zeros + str(last_digit)
    assert minor([too_precise], exponent) == [None]
    assert minor_by_currency([(too_precise, currency)]) == [None]


def reference_minor(values: list[str | None], exponent: int) -> list[int | None]:
    """The exact parser alone, without the fast paths in front of it."""
    from recon.money import _exact_minor

    df = pl.DataFrame({"v": values}, schema={"v": pl.String})
    out: list[int | None] = df.select(_exact_minor(pl.col("v"), exponent).alias("out"))[
        "out"
    ].to_list()
    return out


@settings(max_examples=80, deadline=None)
@given(
    EXPONENTS,
    _amounts(2),
    st.integers(0, 4),
    st.lists(st.tuples(st.integers(0, 39), st.sampled_from(["", "0", "1", ".", "x", "00"]))),
)
def test_columns_with_trailing_zeros_read_as_the_exact_parser_reads_them(
    exponent: int, values: list[int], zeros: int, edits: list[tuple[int, str]]
) -> None:
    """A column whose every value has the first's trailing zeros (WeChat Pay writes fees as
    -3.40000) takes a fast path; a value that breaks the pattern, anywhere, must not change
    what any row reads as."""
    currency = CURRENCY_OF_EXPONENT[exponent]
    texts: list[str | None] = []
    for m in values:
        text = format_minor(m % 10 ** (15 + exponent) * (1 if m >= 0 else -1), currency)
        texts.append(text + ("" if "." in text or not zeros else ".") + "0" * zeros)
    for at, suffix in edits:
        if at < len(texts):
            texts[at] = f"{texts[at]}{suffix}"
    assert minor(texts, exponent) == reference_minor(texts, exponent)
