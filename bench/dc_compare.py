"""Baselines on the already-normalized sides: datacompy's polars backend and a pandas merge.

Runs in its own throwaway venv (datacompy pins polars < 2, so it never joins the
project): ``bench/work/.venv-datacompy/bin/python bench/dc_compare.py --sides DIR
--mode datacompy|pandas``. Imports nothing from recon.

Both compare amount_minor, exponent, currency, status and channel_txn_id on the key
(txn_type, merchant_order_id, merchant_refund_id) plus the occurrence number, as recon
pairs repeated keys. ``datacompy``: ``PolarsCompare(...)`` then ``matches()``,
``count_matching_rows()``, the unique rows of each side and the mismatching columns (no
text report). ``pandas``: ``merge(how="outer", indicator=True)`` then one comparison per
column. Prints JSON; ``seconds`` excludes process start and reading the parquet files.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

KEY = ["txn_type", "merchant_order_id", "merchant_refund_id"]
COMPARED = ["amount_minor", "exponent", "currency", "status", "channel_txn_id"]


def run_datacompy(sides: Path) -> dict[str, Any]:
    import datacompy  # type: ignore[import-not-found,unused-ignore]
    import polars as pl

    def load(name: str) -> Any:
        df = pl.read_parquet(sides / name).sort("origin_line")
        occ = pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(KEY).alias("occ")
        return df.with_columns(occ).select(*KEY, "occ", *COMPARED)

    ledger, bill = load("ledger_side.parquet"), load("bill_side.parquet")
    started = time.perf_counter()
    cmp = datacompy.PolarsCompare(
        ledger, bill, join_columns=[*KEY, "occ"], df1_name="ledger", df2_name="bill"
    )
    out = {
        "matches": bool(cmp.matches()),
        "rows_matching": int(cmp.count_matching_rows()),
        "ledger_only": int(cmp.df1_unq_rows.height),
        "bill_only": int(cmp.df2_unq_rows.height),
        "mismatch_columns": sorted(str(c) for c in cmp.columns_with_mismatches()),
    }
    return {"seconds": time.perf_counter() - started, **out}


def run_pandas(sides: Path) -> dict[str, Any]:
    import pandas as pd  # type: ignore[import-not-found,import-untyped,unused-ignore]

    def load(name: str) -> Any:
        df = pd.read_parquet(sides / name).sort_values("origin_line", kind="stable")
        df["occ"] = df.groupby(KEY, sort=False).cumcount() + 1
        return df[[*KEY, "occ", *COMPARED]]

    ledger, bill = load("ledger_side.parquet"), load("bill_side.parquet")
    started = time.perf_counter()
    m = ledger.merge(
        bill, how="outer", on=[*KEY, "occ"], suffixes=("_l", "_b"), indicator=True, sort=False
    )
    both = m[m["_merge"] == "both"]
    differ = {
        c: int((both[f"{c}_l"].ne(both[f"{c}_b"]) & both[f"{c}_l"].notna()).sum()) for c in COMPARED
    }
    out = {
        "both": len(both),
        "ledger_only": int((m["_merge"] == "left_only").sum()),
        "bill_only": int((m["_merge"] == "right_only").sum()),
        "differing": differ,
    }
    return {"seconds": time.perf_counter() - started, **out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=Path, required=True)
    ap.add_argument("--mode", choices=["datacompy", "pandas"], required=True)
    a = ap.parse_args(argv)
    result = run_datacompy(a.sides) if a.mode == "datacompy" else run_pandas(a.sides)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
