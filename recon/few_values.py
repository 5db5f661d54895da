"""Columns of few distinct values (codes, channel names, UTC offsets): the work is done
once per value, and each row only looks its value up."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

# Up to this many values, a chain of equality tests (a fast scan each) beats hashing
# every row as replace_strict does.
_CHAIN_MAX = 8


def distinct(values: pl.Series) -> pl.Series:
    """The distinct values (in no set order). Peeling off one value at a time with a
    comparison is much cheaper than hashing every row when a few values make up the
    column; past _CHAIN_MAX of them the rest are hashed."""
    found: list[object] = []
    rest = values
    while rest.len() and len(found) < _CHAIN_MAX:
        found.append(rest[0])
        rest = rest.filter(rest.ne_missing(rest[0]))
    return pl.concat([pl.Series(values.name, found, dtype=values.dtype), rest.unique()])


def lookup(values: pl.Series, table: Mapping[str, object], dtype: pl.DataType) -> pl.Series:
    """``table[value]`` for each row; null for a null value or one not in ``table``."""
    if not table:
        return pl.repeat(None, values.len(), dtype=dtype, eager=True).rename(values.name)
    if len(table) > _CHAIN_MAX:
        return values.replace_strict(dict(table), default=None, return_dtype=dtype)
    out: pl.Expr = pl.lit(None, dtype)
    for key, value in table.items():
        out = pl.when(pl.col("v") == key).then(pl.lit(value, dtype)).otherwise(out)
    return values.rename("v").to_frame().select(out).to_series().rename(values.name)


def tidied(codes: pl.Series, *, upper: bool) -> pl.Series:
    """A code column trimmed and in one case, a missing code as ""."""
    codes = codes.fill_null("")
    spellings = distinct(codes)
    tidy = spellings.str.strip_chars()
    tidy = tidy.str.to_uppercase() if upper else tidy.str.to_lowercase()
    changed = spellings != tidy
    if not changed.any():
        return codes
    table = dict(zip(spellings.filter(changed), tidy.filter(changed), strict=True))
    kept = lookup(codes, table, pl.String())
    return kept.fill_null(codes)
