"""Write a run's files: queue CSVs (Excel-safe) with Parquet beside them, summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from recon.excel_safe import neutralise_frame
from recon.queues import Queues


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_frame(df: pl.DataFrame, base: Path) -> None:
    """``base.csv`` for people (formula-safe) and ``base.parquet`` for machines."""
    _atomic_write(base.with_name(base.name + ".csv"), lambda p: neutralise_frame(df).write_csv(p))
    _atomic_write(base.with_name(base.name + ".parquet"), lambda p: df.write_parquet(p))


def write_outputs(
    out_dir: Path, queues: Queues, quarantine: pl.DataFrame, summary: dict[str, Any]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in queues.items():
        write_frame(df, out_dir / name)
    write_frame(quarantine, out_dir / "quarantine")
    text = json.dumps(summary, ensure_ascii=False, indent=2, default=str) + "\n"
    _atomic_write(out_dir / "summary.json", lambda p: p.write_text(text, encoding="utf-8"))
