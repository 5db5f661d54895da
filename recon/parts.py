"""Row sets too big for memory live on disk as ordered Parquet parts.

A parsed bill or a ledger day is a tuple of Parquet files (in row order) plus a row
count. polars reads them lazily (``scan``), DuckDB reads them in SQL (``sql_source``),
and neither ever needs the whole day in memory: DuckDB spills joins to its temp
directory, and the polars scans that remain are filters and small aggregates.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

import polars as pl

# Fast to write and read back; these files live for one run.
COMPRESSION: Final[Literal["lz4"]] = "lz4"


def scan(files: Sequence[Path], schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """The parts as one LazyFrame in row order (an empty frame of ``schema`` when none)."""
    if not files:
        return pl.LazyFrame(schema=dict(schema))
    return pl.scan_parquet([str(f) for f in files])


def sql_source(files: Sequence[Path]) -> str:
    """A DuckDB FROM item reading the parts in order. Writers always leave at least one
    part (possibly empty), so the columns are known even for an empty day."""
    if not files:
        raise ValueError("no parts: a writer leaves at least one, possibly empty")
    listed = ", ".join(_sql_string(str(f)) for f in files)
    return f"read_parquet([{listed}])"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_part(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, compression=COMPRESSION, statistics=False)
    return path


def move_parts(files: Sequence[Path], directory: Path, stem: str) -> tuple[Path, ...]:
    """Move parts into ``directory`` as ``stem-00000.parquet``...; returns the new paths.
    Parts already there under those names stay; stale ones of the same stem go."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = [directory / f"{stem}-{i:05d}.parquet" for i in range(len(files))]
    for old in directory.glob(f"{stem}-*.parquet"):
        if old not in wanted and old not in files:
            old.unlink()
    for src, dst in zip(files, wanted, strict=True):
        if Path(src) != dst:
            shutil.move(str(src), dst)
    return tuple(wanted)
