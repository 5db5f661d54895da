"""Time the diff stage alone on pre-normalized sides (bench.stages --sides writes them).

``python -m bench.diffstage --sides DIR --mode recon|keyjoin [--parquet [--memory-limit 1GB]]``

- ``recon``: ``recon.engine.diff`` (both-ways join, occurrence pairing, outcomes, field
  mismatches) on the two sides.
- ``keyjoin``: the least any both-ways diff must do, in the same engine and with the same
  hand-over: full outer join of the two sides on the key (txn_type, merchant_order_id,
  merchant_refund_id) in DuckDB, fetching which row of each side pairs with which into
  polars.

By default the sides are read into polars frames first and handed to DuckDB as Arrow
string views, both runs alike (the stage alone is timed: sides already in memory). With
``--parquet`` both runs read the side files in DuckDB instead, as the pipeline does with
its Parquet parts (nothing whole in Python; DuckDB capped at ``--memory-limit``, spilling
to a temporary directory), and the time includes reading them.

Prints JSON: ``seconds`` is the stage alone, process start excluded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl

from recon.duck import as_query, work_connection
from recon.engine import diff
from recon.parts import sql_source
from recon.sides import KEY, SIDE_SCHEMA

KEYJOIN_SQL = """
SELECT l._row AS l_row, b._row AS b_row
FROM ({bill}) b FULL OUTER JOIN ({ledger}) l
USING (txn_type, merchant_order_id, merchant_refund_id)
"""


def keyjoin(con: duckdb.DuckDBPyConnection, ledger: str, bill: str) -> pl.DataFrame:
    """Row pairs of the key-only join of two side queries (``_row``: a row's number)."""
    pairs: pl.DataFrame = con.sql(KEYJOIN_SQL.format(ledger=ledger, bill=bill)).pl()
    return pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=Path, required=True)
    ap.add_argument("--mode", choices=["recon", "keyjoin"], required=True)
    ap.add_argument("--parquet", action="store_true", help="read the side files in DuckDB")
    ap.add_argument("--memory-limit", default="1GB", help="DuckDB's cap with --parquet")
    a = ap.parse_args(argv)
    files = {s: a.sides / f"{s}_side.parquet" for s in ("ledger", "bill")}
    with tempfile.TemporaryDirectory(prefix="diffstage-") as tmp:
        con = work_connection(Path(tmp), a.memory_limit if a.parquet else None)
        ledger: pl.DataFrame | str
        bill: pl.DataFrame | str
        if a.parquet:
            ledger, bill = (
                f"SELECT {', '.join(SIDE_SCHEMA)} FROM {sql_source([files[s]])}"
                for s in ("ledger", "bill")
            )
            # The row number of the key-only join: where the row is in its file.
            numbered = {
                s: f"SELECT {', '.join(KEY)}, file_row_number AS _row "
                f"FROM read_parquet('{files[s]}', file_row_number = true)"
                for s in ("ledger", "bill")
            }
        else:
            ledger, bill = pl.read_parquet(files["ledger"]), pl.read_parquet(files["bill"])
        started = time.perf_counter()
        if a.mode == "recon":
            counts = diff(ledger, bill, ["SUCCESS"], con).counts
        else:
            if isinstance(ledger, pl.DataFrame) and isinstance(bill, pl.DataFrame):
                # Handed over as the diff's sides are (Arrow string views): registering the
                # frames themselves copies every string and made this run 35% slower.
                cols = [*KEY, "_row"]
                with (
                    as_query(con, ledger.with_row_index("_row"), cols) as lq,
                    as_query(con, bill.with_row_index("_row"), cols) as bq,
                ):
                    pairs = keyjoin(con, lq, bq)
            else:
                pairs = keyjoin(con, numbered["ledger"], numbered["bill"])
            both = pairs.filter(pl.col("l_row").is_not_null() & pl.col("b_row").is_not_null())
            counts = {"pairs": pairs.height, "both": both.height}
        seconds = time.perf_counter() - started
        con.close()
    print(json.dumps({"seconds": seconds, **counts}))


if __name__ == "__main__":
    main()
