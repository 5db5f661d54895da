"""Neutralise spreadsheet formula injection in exported text (OWASP CSV injection).

A cell that starts with = + - @ (or a tab / carriage return) is prefixed with a
single quote, unless it is a plain number such as ``-0.01``: Excel then shows it
as text instead of evaluating it.
"""

from __future__ import annotations

import polars as pl

_TRIGGER = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?\d+(\.\d+)?$"


def neutralise(col: pl.Expr) -> pl.Expr:
    risky = col.str.contains(_TRIGGER) & ~col.str.contains(_NUMBER)
    return pl.when(risky).then(pl.lit("'") + col).otherwise(col)


def neutralise_frame(df: pl.DataFrame) -> pl.DataFrame:
    strings = [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns(neutralise(pl.col(c)).alias(c) for c in strings)
