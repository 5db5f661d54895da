"""Money as integer minor units: parsing decimal strings exactly, formatting them back.

A value with more decimals than its currency allows is rejected, never rounded
(``12.5`` and ``12.50`` are equal; ``12.505`` CNY is an error).
"""

from __future__ import annotations

import re
from decimal import Decimal

import polars as pl

from recon.currency import CURRENCY_EXPONENTS

_MAX_INT_DIGITS = 15  # keeps minor units far from Int64 overflow
_NUMBER = r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$"  # ASCII digits only: \d also matches ３
_GROUPED = r"^[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$"


def to_minor(value: pl.Expr, exponent: int) -> pl.Expr:
    """Decimal string -> Int64 minor units, null when it is not an exact amount.

    Accepts ``12``, ``12.5``, ``012.50``, ``+12.50``, ``-0.01``, ``1,234.50`` and
    surrounding blanks; rejects exponents, empty strings and extra precision.
    """
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


def to_minor_by_currency(value: pl.Expr, currency: pl.Expr) -> pl.Expr:
    """Like :func:`to_minor` with the exponent taken from each row's currency."""
    out: pl.Expr = pl.lit(None, pl.Int64)
    for exp in sorted(set(CURRENCY_EXPONENTS.values())):
        codes = [c for c, e in CURRENCY_EXPONENTS.items() if e == exp]
        out = pl.when(currency.is_in(codes)).then(to_minor(value, exp)).otherwise(out)
    return out


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
