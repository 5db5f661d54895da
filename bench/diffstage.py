"""Time the diff stage alone on pre-normalized sides (bench.stages --sides writes them).

``python -m bench.diffstage --sides DIR --mode recon|keyjoin``

- ``recon``: ``recon.engine.diff`` (both-ways join, occurrence pairing, outcomes, field
  mismatches) on the two side frames.
- ``keyjoin``: the least any both-ways diff must do, in the same engine and with the same
  hand-over: register the key columns of both frames (and a row number) in DuckDB, full
  outer join on the key (txn_type, merchant_order_id, merchant_refund_id), fetch which
  row of each side pairs with which into polars.

Prints JSON: ``seconds`` is the stage alone (sides already in memory), process start
and parquet reading excluded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb
import polars as pl

from recon.engine import diff
from recon.sides import KEY

KEYJOIN_SQL = """
SELECT l._row AS l_row, b._row AS b_row
FROM bill_side b FULL OUTER JOIN ledger_side l
USING (txn_type, merchant_order_id, merchant_refund_id)
"""


def keyjoin(ledger: pl.DataFrame, bill: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")  # as recon.engine.diff does
    con.register("ledger_side", ledger.select(KEY).with_row_index("_row"))
    con.register("bill_side", bill.select(KEY).with_row_index("_row"))
    pairs: pl.DataFrame = con.sql(KEYJOIN_SQL).pl()
    con.close()
    return pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=Path, required=True)
    ap.add_argument("--mode", choices=["recon", "keyjoin"], required=True)
    a = ap.parse_args(argv)
    ledger = pl.read_parquet(a.sides / "ledger_side.parquet")
    bill = pl.read_parquet(a.sides / "bill_side.parquet")
    started = time.perf_counter()
    if a.mode == "recon":
        counts = diff(ledger, bill, ["SUCCESS"]).counts
    else:
        pairs = keyjoin(ledger, bill)
        both = pairs.filter(pl.col("l_row").is_not_null() & pl.col("b_row").is_not_null())
        counts = {"pairs": pairs.height, "both": both.height}
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, **counts}))


if __name__ == "__main__":
    main()
