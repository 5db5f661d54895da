"""Row checks: flag rows that fail, with the first failing check's column and reason."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class RowCheck:
    """A row is quarantined when ``bad`` holds; the first failing check names it."""

    column: str  # the input's own column name, for the analyst
    bad: pl.Expr
    reason: pl.Expr | str


def apply_checks(staged: pl.DataFrame, checks: list[RowCheck]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split into (passing rows, failing rows with ``_q_col`` and ``_q_why``).

    Which rows fail is one pass over all rows; which check and why is worked out for the
    failing rows only (few), in one chunk: polars 2.1 can panic in pl.format over a
    filtered frame of many chunks (seen on a 400k-row read_csv)."""
    failing = pl.any_horizontal(pl.lit(False), *(chk.bad.fill_null(True) for chk in checks))
    bad = staged.select(failing).to_series()
    if not bad.any():
        return staged, staged.clear().with_columns(
            pl.lit(None, pl.String).alias("_q_col"), pl.lit(None, pl.String).alias("_q_why")
        )
    col: pl.Expr = pl.lit(None, pl.String)
    why: pl.Expr = pl.lit(None, pl.String)
    for chk in reversed(checks):  # first listed check wins
        reason = pl.lit(chk.reason) if isinstance(chk.reason, str) else chk.reason
        hit = chk.bad.fill_null(True)
        col = pl.when(hit).then(pl.lit(chk.column)).otherwise(col)
        why = pl.when(hit).then(reason).otherwise(why)
    flagged = staged.filter(bad).rechunk().with_columns(col.alias("_q_col"), why.alias("_q_why"))
    return staged.filter(~bad), flagged
