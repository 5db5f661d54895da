"""DuckDB connections for the big work (the diff join, the shard split).

A work connection is an in-memory database capped at ``memory_limit``: joins and
aggregates that outgrow it spill to ``temp_directory``. Rows leave DuckDB only when
they are few (the unmatched and differing pairings).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recon.channel_config import MEMORY_LIMIT

_names = count()


def work_connection(
    temp_dir: Path | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection that spills to ``temp_dir`` beyond ``memory_limit``.

    Row order is not preserved (nothing here depends on it: results are sorted where
    order matters), which lets DuckDB stream and spill more freely.
    """
    con = duckdb.connect(":memory:")
    try:
        if memory_limit is not None:
            if not MEMORY_LIMIT.match(memory_limit):
                raise ValueError(
                    f"memory_limit: expected e.g. '1GB' or '512MiB', not {memory_limit!r}"
                )
            con.execute(f"SET memory_limit = '{memory_limit}'")
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
            con.execute("SET temp_directory = ?", [str(temp_dir)])
        con.execute("SET preserve_insertion_order = false")
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def as_query(
    con: duckdb.DuckDBPyConnection, side: pl.DataFrame | str, columns: list[str]
) -> Iterator[str]:
    """A SQL query for ``side``: a frame is registered for the duration (only
    ``columns`` of it), a query is used as it is."""
    if isinstance(side, str):
        yield side
        return
    name = f"_recon_frame_{next(_names)}"
    # As Arrow string views, polars' own layout: no copy (DuckDB would otherwise convert
    # the frame, copying every string, for each query that reads it).
    con.register(name, side.select(columns).to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        yield f"SELECT * FROM {name}"
    finally:
        con.unregister(name)


def one_row(cursor: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row of the query just executed, its result consumed. DuckDB keeps a
    result open until a fetch comes back empty (``fetchone`` on one row does not), and
    meanwhile refuses ``register`` on the connection ("unfinished result")."""
    rows = cursor.fetchall()
    return rows[0] if rows else None
