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
    """Split into (passing rows, failing rows with ``_q_col`` and ``_q_why``)."""
    col: pl.Expr = pl.lit(None, pl.String)
    why: pl.Expr = pl.lit(None, pl.String)
    for chk in reversed(checks):  # first listed check wins
        reason = pl.lit(chk.reason) if isinstance(chk.reason, str) else chk.reason
        bad = chk.bad.fill_null(True)
        col = pl.when(bad).then(pl.lit(chk.column)).otherwise(col)
        why = pl.when(bad).then(reason).otherwise(why)
    flagged = staged.with_columns(col.alias("_q_col"), why.alias("_q_why"))
    failing = pl.col("_q_col").is_not_null()
    return flagged.filter(~failing).drop("_q_col", "_q_why"), flagged.filter(failing)
