"""Write a run's files: queue CSVs (Excel-safe) with Parquet beside them, summary.json.

Each file is written by polars in one pass (a LazyFrame is streamed to the file, never
collected whole) under a temporary name and then renamed, so readers never see half a file.
The queue files always hold every row of the queue; queues.xlsx may show only the first
(recon.report_data.SHEET_ROWS) and says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from recon.excel_safe import neutralise, neutralise_frame
from recon.queues import Queues


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _neutralised(frame: pl.LazyFrame) -> pl.LazyFrame:
    strings = [c for c, t in frame.collect_schema().items() if t == pl.String]
    return frame.with_columns(neutralise(pl.col(c)).alias(c) for c in strings)


def write_frame(df: pl.DataFrame | pl.LazyFrame, base: Path) -> None:
    """``base.csv`` for people (formula-safe) and ``base.parquet`` for machines."""
    csv, parquet = base.with_name(base.name + ".csv"), base.with_name(base.name + ".parquet")
    if isinstance(df, pl.LazyFrame):
        _atomic_write(csv, lambda p: _neutralised(df).sink_csv(p))
        _atomic_write(parquet, lambda p: df.sink_parquet(p))
    else:
        _atomic_write(csv, lambda p: neutralise_frame(df).write_csv(p))
        _atomic_write(parquet, lambda p: df.write_parquet(p))


def write_outputs(
    out_dir: Path, queues: Queues, quarantine: pl.DataFrame, summary: dict[str, Any]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in queues.items():
        write_frame(df, out_dir / name)
    write_frame(quarantine, out_dir / "quarantine")
    text = json.dumps(summary, ensure_ascii=False, indent=2, default=str) + "\n"
    _atomic_write(out_dir / "summary.json", lambda p: p.write_text(text, encoding="utf-8"))
