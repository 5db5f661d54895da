"""Split a channel-day into K shards by its key, diff each shard, merge the results.

A row's shard is a stable function of its key alone (txn_type, merchant_order_id,
merchant_refund_id): the first 32 bits of the MD5 of the key's parts joined by U+001F
(a missing part counts as empty), modulo K. So every copy of a key, on either side,
lands in the same shard, the occurrence pairing of repeated keys happens inside one
shard, and the merged result of the shards is the unsharded diff's. MD5 is fixed by
RFC 1321, not by a library version: a shard written by one version is found again by
another (``shard_of_key`` computes it in plain Python).

The Airflow mapped tasks pass paths, never data: ``write_shards`` splits the two sides
(DuckDB queries over a day's Parquet parts, see recon.sides) in one pass each, inside
DuckDB, into each shard's Parquet parts, and returns their folders as plain dicts
(XCom-safe); ``diff_shard`` diffs one shard from its parts and ``write_result`` /
``read_result`` carry a shard's DiffResult to the task that merges them with
``merge_results``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import polars as pl

from recon.duck import as_query
from recon.engine import OUTCOMES, DiffResult, diff
from recon.parts import COMPRESSION, move_parts, sql_source, write_part
from recon.sides import KEY, SIDE_SCHEMA

SEPARATOR = "\x1f"
LEDGER_DIR, BILL_DIR = "ledger", "bill"  # a shard's two sides: folders of Parquet parts

# Deterministic order of merged frames (the unsharded diff leaves unmatched unordered
# and orders mismatches by bill line and field; ties are broken by the rest).
UNMATCHED_ORDER = ["outcome", "bill_line", "ledger_row", *KEY, "occ"]
MISMATCH_ORDER = ["bill_line", "field", "ledger_row", *KEY, "occ"]
MATCHED_ORDER = ["bill_line", "ledger_row", *KEY, "occ"]


def shard_of_key(txn_type: str | None, order_id: str | None, refund_id: str | None, k: int) -> int:
    """The shard of one key, in plain Python (the reference for :func:`shard_ids`)."""
    text = SEPARATOR.join(p or "" for p in (txn_type, order_id, refund_id))
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) % k  # noqa: S324 (not security)


def shard_sql(k: int) -> str:
    """A row's shard (0..k-1) in DuckDB SQL, from its key columns: :func:`shard_of_key`."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    parts = ", chr(31), ".join(f"coalesce({c}, '')" for c in KEY)
    return f"CAST(('0x' || left(md5(concat({parts})), 8)) AS UBIGINT) % {k}"


def shard_ids(side: pl.DataFrame, k: int) -> pl.Series:
    """Each row's shard (UInt32, 0..k-1), from its key only."""
    expr = shard_sql(k)
    if k == 1 or side.height == 0:
        return pl.repeat(0, side.height, dtype=pl.UInt32, eager=True).alias("shard")
    # In row order: the scan of a frame keeps it while insertion order is preserved.
    with duckdb.connect() as con, as_query(con, side, list(KEY)) as q:
        ids: pl.DataFrame = con.sql(f"SELECT CAST({expr} AS UINTEGER) AS shard FROM ({q})").pl()
    return ids.to_series()


def split(side: pl.DataFrame, k: int) -> list[pl.DataFrame]:
    """The side's rows of each shard, in their original order (empty frames included)."""
    rows = side.select(list(SIDE_SCHEMA))
    ids = shard_ids(rows, k)
    return [rows.filter(ids == i) for i in range(k)]


def diff_sharded(
    ledger_side: pl.DataFrame,
    bill_side: pl.DataFrame,
    settled: Sequence[str] = ("SUCCESS",),
    k: int = 4,
    *,
    keep_matched: bool = False,
) -> DiffResult:
    """recon.engine.diff shard by shard, merged: the same result as the whole diff."""
    ledgers, bills = split(ledger_side, k), split(bill_side, k)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        return merge_results(
            [
                diff(lp, bp, settled, con, keep_matched=keep_matched)
                for lp, bp in zip(ledgers, bills, strict=True)
            ]
        )
    finally:
        con.close()


def merge_results(results: Iterable[DiffResult]) -> DiffResult:
    """Counts summed, frames concatenated and sorted deterministically."""
    parts = list(results)
    if not parts:
        raise ValueError("no shard results to merge")
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in parts:
        for name, n in r.counts.items():
            counts[name] = counts.get(name, 0) + n
    unmatched = _concat([r.unmatched for r in parts], UNMATCHED_ORDER)
    mismatches = _concat([r.mismatches for r in parts], MISMATCH_ORDER)
    matched = None
    if all(r.matched is not None for r in parts):
        matched = _concat([r.matched for r in parts if r.matched is not None], MATCHED_ORDER)
    return DiffResult(counts=counts, unmatched=unmatched, mismatches=mismatches, matched=matched)


def _concat(frames: list[pl.DataFrame], order: list[str]) -> pl.DataFrame:
    df = pl.concat(frames, how="vertical")
    by = [c for c in order if c in df.columns]
    rest = [c for c in df.columns if c not in by]
    return df.sort([*by, *rest], nulls_last=True, maintain_order=True)


# --- files: what the mapped tasks hand each other -------------------------------------------


def write_shards(
    ledger_side: str | pl.DataFrame,
    bill_side: str | pl.DataFrame,
    k: int,
    out_dir: Path,
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[dict[str, str]]:
    """Split both sides (DuckDB queries yielding SIDE_SCHEMA, e.g. recon.sides.ledger_side_sql,
    or frames) into ``out_dir/shard-III-of-KKK/{ledger,bill}/part-*.parquet``, one pass per
    side in DuckDB; their folders, one dict per shard. Every shard gets at least one part
    (possibly empty). Give a recon.duck.work_connection to cap DuckDB's memory."""
    shard = shard_sql(k)
    own = con is None
    if con is None:
        con = duckdb.connect()
    folders = [out_dir / f"shard-{i:03d}-of-{k:03d}" for i in range(k)]
    try:
        for name, side in ((LEDGER_DIR, ledger_side), (BILL_DIR, bill_side)):
            split_dir = out_dir / f"_split_{name}"
            shutil.rmtree(split_dir, ignore_errors=True)
            out_dir.mkdir(parents=True, exist_ok=True)
            with as_query(con, side, list(SIDE_SCHEMA)) as q:
                con.execute(
                    f"COPY (SELECT {', '.join(SIDE_SCHEMA)}, {shard} AS shard FROM ({q})) "
                    f"TO {_sql_string(str(split_dir))} "
                    f"(FORMAT parquet, PARTITION_BY (shard), COMPRESSION {COMPRESSION})"
                )
            for i, folder in enumerate(folders):
                files = sorted((split_dir / f"shard={i}").glob("*.parquet"))
                if not files:  # no row of this side in this shard: an empty part
                    files = [
                        write_part(
                            pl.DataFrame(schema=SIDE_SCHEMA), split_dir / f"empty-{i}.parquet"
                        )
                    ]
                move_parts(files, folder / name, "part")
            shutil.rmtree(split_dir)
    finally:
        if own:
            con.close()
    return [
        {
            "shard": str(i),
            "k": str(k),
            "ledger": str(folder / LEDGER_DIR),
            "bill": str(folder / BILL_DIR),
        }
        for i, folder in enumerate(folders)
    ]


def shard_sides(paths: dict[str, str]) -> tuple[str, str]:
    """(ledger side, bill side) of one shard written by :func:`write_shards`, as DuckDB
    queries for recon.engine.diff."""

    def side(folder: str) -> str:
        parts = sorted(Path(folder).glob("part-*.parquet"))
        return f"SELECT {', '.join(SIDE_SCHEMA)} FROM {sql_source(parts)}"

    return side(paths["ledger"]), side(paths["bill"])


def diff_shard(
    paths: dict[str, str],
    settled: Sequence[str] = ("SUCCESS",),
    con: duckdb.DuckDBPyConnection | None = None,
) -> DiffResult:
    ledger, bill = shard_sides(paths)
    return diff(ledger, bill, settled, con)


def write_result(result: DiffResult, folder: Path) -> str:
    """Write one DiffResult (counts.json and Parquet frames) into ``folder``; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "counts.json").write_text(json.dumps(result.counts, sort_keys=True) + "\n")
    result.unmatched.write_parquet(folder / "unmatched.parquet")
    result.mismatches.write_parquet(folder / "mismatches.parquet")
    matched = folder / "matched.parquet"
    if result.matched is not None:
        result.matched.write_parquet(matched)
    else:
        matched.unlink(missing_ok=True)
    return str(folder)


def read_result(folder: str | Path) -> DiffResult:
    folder = Path(folder)
    counts = {str(k): int(v) for k, v in json.loads((folder / "counts.json").read_text()).items()}
    matched = folder / "matched.parquet"
    return DiffResult(
        counts=counts,
        unmatched=pl.read_parquet(folder / "unmatched.parquet"),
        mismatches=pl.read_parquet(folder / "mismatches.parquet"),
        matched=pl.read_parquet(matched) if matched.exists() else None,
    )


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
