"""Money as integer minor units: parsing decimal strings exactly, formatting them back.

A value with more decimals than its currency allows is rejected, never rounded
(``12.5`` and ``12.50`` are equal; ``12.505`` CNY is an error).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from functools import partial

import polars as pl

from recon.currency import CURRENCY_EXPONENTS
from recon.few_values import distinct, lookup

_MAX_INT_DIGITS = 15  # keeps minor units far from Int64 overflow
_NUMBER = r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$"  # ASCII digits only: \d also matches ３
_GROUPED = r"^[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$"


def to_minor(value: pl.Expr, exponent: int) -> pl.Expr:
    """Decimal string -> Int64 minor units, null when it is not an exact amount.

    Accepts ``12``, ``12.5``, ``012.50``, ``+12.50``, ``-0.01``, ``1,234.50`` and
    surrounding blanks; rejects exponents, empty strings and extra precision.

    Row by row, so it runs on whole columns (``select`` / ``with_columns``): values
    in the plain form ``123.45`` take a fast path, the rest the exact parser.
    """
    return value.map_batches(
        partial(_minor_series, exponent=exponent), return_dtype=pl.Int64, is_elementwise=True
    )


def to_minor_by_currency(value: pl.Expr, currency: pl.Expr) -> pl.Expr:
    """Like :func:`to_minor` with the exponent taken from each row's currency."""
    return pl.map_batches(
        [value, currency], _minor_by_currency_series, return_dtype=pl.Int64, is_elementwise=True
    )


def _exact_minor(value: pl.Expr, exponent: int) -> pl.Expr:
    """The reference parser behind :func:`to_minor` (every accepted spelling)."""
    s = value.str.strip_chars()
    s = (
        pl.when(s.str.contains(_GROUPED))
        .then(s.str.replace_all(",", "", literal=True))
        .otherwise(s)
    )
    parts = s.str.extract_groups(_NUMBER)
    sign, whole_raw, frac_raw = (parts.struct.field(n) for n in ("1", "2", "3"))
    frac_raw = frac_raw.fill_null("")
    whole = whole_raw.str.strip_chars_start("0")  # zero padding is not precision
    frac = frac_raw.str.strip_chars_end("0")
    ok = (
        sign.is_not_null()
        & ((whole_raw.str.len_chars() > 0) | (frac_raw.str.len_chars() > 0))
        & (frac.str.len_chars() <= exponent)
        & (whole.str.len_chars() <= _MAX_INT_DIGITS)
    )
    whole_int = pl.when(whole.str.len_chars() > 0).then(whole).otherwise(pl.lit("0")).cast(pl.Int64)
    frac_int = (
        frac.str.pad_end(exponent, "0").cast(pl.Int64, strict=False).fill_null(0)
        if exponent > 0
        else pl.lit(0, pl.Int64)
    )
    magnitude = whole_int * (10**exponent) + frac_int
    signed = pl.when(sign == "-").then(-magnitude).otherwise(magnitude)
    return pl.when(ok).then(signed).otherwise(None).cast(pl.Int64)


def _plain(exponent: int) -> str:
    """The common spelling, parsed without the exact parser: ASCII digits, at most 15 before
    the point (so no zero padding to strip first), exactly ``exponent`` after it, then only
    zeros (``12.50``, ``0.12000``); or no point at all (``12``)."""
    frac = rf"\.[0-9]{{{exponent}}}0*" if exponent else r"\.0*"
    return rf"^[+-]?[0-9]{{1,{_MAX_INT_DIGITS}}}(?:{frac})?$"


_PLAIN_BY_EXPONENT = {e: _plain(e) for e in set(CURRENCY_EXPONENTS.values()) | {0, 2, 3}}


def _plain_minor(value: pl.Expr, exponent: int) -> pl.Expr:
    """Minor units of a value in the :func:`_plain` form (garbage for any other)."""
    v = value.str.strip_prefix("+").str.strip_prefix("-")
    dot = v.str.find(".", literal=True)
    whole = pl.when(dot.is_null()).then(v).otherwise(v.str.slice(0, dot))
    magnitude = whole.cast(pl.Int64, strict=False) * (10**exponent)
    if exponent > 0:
        magnitude += v.str.slice(dot + 1, exponent).cast(pl.Int64, strict=False).fill_null(0)
    return pl.when(value.str.starts_with("-")).then(-magnitude).otherwise(magnitude)


def _minor_series(s: pl.Series, exponent: int) -> pl.Series:
    """:func:`to_minor` on a Series: the plain rows fast, the others through the exact parser."""
    s = s.cast(pl.String)
    frame = s.rename("v").to_frame()
    v = pl.col("v")
    # Commonest of all: every value exactly ``123.45`` or ``-123.45`` (no decimals if none),
    # or every value with as many trailing zeros as the first (WeChat Pay's fee, -3.40000).
    zeros = _extra_zeros(s, exponent)
    frac = rf"\.[0-9]{{{exponent}}}0{{{zeros}}}" if exponent + zeros else ""
    strict = rf"^-?[0-9]{{1,{_MAX_INT_DIGITS}}}{frac}$"
    if frame.select(v.str.contains(strict).fill_null(False).all()).item():
        digits = v.str.head(-zeros) if zeros else v
        return (
            frame.select(digits.str.replace(".", "", literal=True).cast(pl.Int64))
            .to_series()
            .rename(s.name)
        )
    plain_re = _PLAIN_BY_EXPONENT.get(exponent) or _plain(exponent)
    plain = frame.select(v.str.contains(plain_re).fill_null(False)).to_series()
    if not plain.any():
        return frame.select(_exact_minor(v, exponent)).to_series().rename(s.name)
    out = frame.select(
        pl.when(plain.rename("_plain")).then(_plain_minor(v, exponent)).cast(pl.Int64)
    ).to_series()
    if not plain.all():
        others = (~plain).arg_true()
        exact = frame[others].select(_exact_minor(v, exponent)).to_series()
        out = out.scatter(others, exact)
    return out.rename(s.name)


_FIRST = re.compile(r"-?[0-9]+\.([0-9]*)")


def _extra_zeros(s: pl.Series, exponent: int) -> int:
    """Decimals of the first value beyond ``exponent`` (0 when it has none or is not plain)."""
    first = s[0] if s.len() else None
    match = _FIRST.fullmatch(first) if isinstance(first, str) else None
    return max(len(match.group(1)) - exponent, 0) if match else 0


def _minor_by_currency_series(series: Sequence[pl.Series]) -> pl.Series:
    value, currency = series
    n = max(value.len(), currency.len())
    if value.len() != n:  # a literal among the inputs
        value = value.extend_constant(value[0], n - 1) if value.len() == 1 else value
    if currency.len() != n:
        currency = currency.extend_constant(currency[0], n - 1) if currency.len() == 1 else currency
    exps = exponents_of(currency)
    present = exps.drop_nulls().unique().to_list()
    if len(present) == 1 and exps.null_count() == 0:
        return _minor_series(value, int(present[0])).rename(value.name)
    out = pl.repeat(None, n, dtype=pl.Int64, eager=True)
    value = value.cast(pl.String)
    for exp in present:
        rows = (exps == exp).fill_null(False).arg_true()
        out = out.scatter(rows, _minor_series(value[rows], int(exp)))
    return out.rename(value.name)


def exponents_of(currency: pl.Series) -> pl.Series:
    """Each row's currency exponent, null for an unknown code; worked out once per
    distinct code (a column holds few), not hashed row by row."""
    codes = currency.cast(pl.String)
    known = {c: CURRENCY_EXPONENTS[c] for c in distinct(codes) if c in CURRENCY_EXPONENTS}
    return lookup(codes, known, pl.Int64())


def exponent_expr(currency: pl.Expr) -> pl.Expr:
    return currency.replace_strict(CURRENCY_EXPONENTS, default=None, return_dtype=pl.Int64)


def format_minor(minor: int, currency: str) -> str:
    """Minor units -> plain decimal string in major units (``1250, CNY`` -> ``12.50``)."""
    exp = CURRENCY_EXPONENTS.get(currency, 2)
    return str(Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp)))


_PLAIN = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_GROUPED_RE = re.compile(_GROUPED)


def decimal_or_none(text: str) -> Decimal | None:
    """Exact parse of a plain decimal for control totals (``1,234.50`` grouping allowed);
    ``None`` for anything else, exponents and ``1_000`` included."""
    t = text.strip()
    if _GROUPED_RE.match(t):
        t = t.replace(",", "")
    return Decimal(t) if _PLAIN.match(t) else None


def format_minor_expr(minor: pl.Expr, exponent: pl.Expr) -> pl.Expr:
    """Vectorised :func:`format_minor`: minor units + exponent -> ``12.50``."""
    sign = pl.when(minor < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    mag = minor.abs()
    out: pl.Expr = pl.lit(None, pl.String)
    for exp in sorted(set(CURRENCY_EXPONENTS.values())):
        if exp == 0:
            text = mag.cast(pl.String)
        else:
            unit = 10**exp
            whole = (mag // unit).cast(pl.String)
            frac = (mag % unit).cast(pl.String).str.pad_start(exp, "0")
            text = whole + pl.lit(".") + frac
        out = pl.when(exponent == exp).then(sign + text).otherwise(out)
    return out
