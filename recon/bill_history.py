"""The store's history of bill rows (``bill_rows``), for the checks that look across days.

Two checks read earlier days' bills: a local-missing row an earlier bill already had is
billed twice (DUPLICATE_ACROSS_BILLS), and an order refunded today whose refunds over every
bill pass what was paid (REFUNDS_EXCEED_PAYMENT). Both look up orders: today's
local-missing ones and today's refunded ones. The history is scanned once for both (every
stored row's order id is read and probed, so a run's cost grows with the history kept), into
a small temporary table the checks then read.

The history kept is bounded: a run keeps the channel's rows of the ``history_days`` days
before its day and deletes older ones, and looks no further back. ``bill_rows`` is derived
from the archived bills, so nothing is lost that a re-run could not restore.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import polars as pl

from parsers.base import ParsedBill
from recon import candidates as cand
from recon.parts import sql_source

# What the store keeps of each bill row (bill_rows, besides channel and business_date):
# what later days' checks read, the key and the amount.
_BILL_ROW_VALUES = "txn_type, merchant_order_id, merchant_refund_id, amount_minor"

# Today's refunded orders, and the earlier rows of those orders and of today's
# local-missing ones (``_lookup_keys``), within the window kept.
_REFUNDED_SQL = """
CREATE OR REPLACE TEMP TABLE _refunded AS
SELECT DISTINCT merchant_order_id FROM {today} WHERE txn_type = 'refund'
"""
_EARLIER_SQL = """
CREATE OR REPLACE TEMP TABLE _earlier AS
SELECT business_date, txn_type, merchant_order_id, merchant_refund_id, amount_minor
FROM bill_rows
WHERE channel = $channel AND business_date < $day AND business_date >= $since
  AND merchant_order_id IN (
    SELECT merchant_order_id FROM _refunded
    UNION SELECT merchant_order_id FROM _lookup_keys
  )
"""

# Orders refunded today whose refunds, over every bill in the window (the earlier rows
# looked up and today's rows, ``{today}``), pass what was paid; with the last of today's
# refunds of the order (by bill line), which the break is raised on. An order no bill has
# a payment of is not checked. The sums read only key and amount; the last refund's line,
# id and file are looked up for the few orders over (on a big day, arg_max over every
# refund's wide strings costs more than the sums).
_REFUNDS_OVER_SQL = """
WITH
everything AS (
  SELECT txn_type, merchant_order_id, amount_minor FROM _earlier
  WHERE txn_type IN ('payment', 'refund')
    AND merchant_order_id IN (SELECT merchant_order_id FROM _refunded)
  UNION ALL
  SELECT txn_type, merchant_order_id, amount_minor FROM {today}
  WHERE txn_type IN ('payment', 'refund')
    AND merchant_order_id IN (SELECT merchant_order_id FROM _refunded)
),
over AS MATERIALIZED (
  SELECT * FROM (
    SELECT merchant_order_id,
           CAST(sum(amount_minor) FILTER (WHERE txn_type = 'payment') AS BIGINT) AS paid,
           CAST(sum(amount_minor) FILTER (WHERE txn_type = 'refund') AS BIGINT) AS refunded
    FROM everything GROUP BY merchant_order_id
  ) WHERE paid IS NOT NULL AND refunded > paid
),
last_refund AS (
  SELECT merchant_order_id,
         arg_max(merchant_refund_id, source_line) AS merchant_refund_id,
         arg_max(source_file, source_line) AS source_file,
         max(source_line) AS source_line
  FROM {today}
  WHERE txn_type = 'refund' AND merchant_order_id IN (SELECT merchant_order_id FROM over)
  GROUP BY merchant_order_id
)
SELECT 'refund' AS txn_type, s.merchant_order_id, r.merchant_refund_id, s.paid, s.refunded,
       r.source_file, r.source_line
FROM over s JOIN last_refund r USING (merchant_order_id)
ORDER BY r.source_line
"""


def window_start(day: dt.date, history_days: int) -> dt.date:
    """The first business day whose bill rows a run of ``day`` keeps and looks back to."""
    return day - dt.timedelta(days=history_days)


@contextmanager
def looked_up(
    con: duckdb.DuckDBPyConnection,
    channel: str,
    day: dt.date,
    history_days: int,
    bill: ParsedBill,
    local_missing: pl.DataFrame,
) -> Iterator[None]:
    """Within: the earlier rows the day's checks read, fetched in one scan of the history
    (``_earlier``, with ``_refunded``: today's refunded orders, and ``_lookup_keys``: the
    keys of ``local_missing``, today's local-missing rows) in the connection's temp schema;
    dropped after. On a failure they (and the registered frame) are left to the caller's
    rollback and connection: in an aborted transaction a DROP or an unregister would fail
    too, and hide the first error."""
    con.execute(_REFUNDED_SQL.format(today=sql_source(bill.rows_files)))
    con.register("_lookup_frame", local_missing.select(cand.KEY).unique())
    con.execute("CREATE OR REPLACE TEMP TABLE _lookup_keys AS SELECT * FROM _lookup_frame")
    con.unregister("_lookup_frame")
    con.execute(
        _EARLIER_SQL,
        {"channel": channel, "day": day, "since": window_start(day, history_days)},
    )
    yield
    for table in ("_earlier", "_lookup_keys", "_refunded"):
        con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def billed_before(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Those of today's local-missing keys (``looked_up``) that an earlier day's bill had."""
    billed: pl.DataFrame = con.sql(
        "SELECT DISTINCT k.txn_type, k.merchant_order_id, k.merchant_refund_id "
        "FROM _earlier h JOIN _lookup_keys k "
        "USING (txn_type, merchant_order_id, merchant_refund_id)"
    ).pl()
    return billed


def refunds_over_payments(con: duckdb.DuckDBPyConnection, bill: ParsedBill) -> pl.DataFrame:
    """Today's refunded orders (``looked_up``) refunded beyond what every bill in the window
    says was paid, each with the last of today's refunds of it."""
    over: pl.DataFrame = con.sql(_REFUNDS_OVER_SQL.format(today=sql_source(bill.rows_files))).pl()
    return over


def store_day(
    con: duckdb.DuckDBPyConnection,
    channel: str,
    day: dt.date,
    bill: ParsedBill,
    history_days: int,
) -> None:
    """Keep the day's bill rows for later days' checks, straight from its Parquet parts
    (replacing a re-run's), and drop the channel's rows from before the window."""
    con.execute("DELETE FROM bill_rows WHERE channel = ? AND business_date = ?", [channel, day])
    con.execute(
        "DELETE FROM bill_rows WHERE channel = ? AND business_date < ?",
        [channel, window_start(day, history_days)],
    )
    con.execute(
        f"INSERT INTO bill_rows (channel, business_date, {_BILL_ROW_VALUES}) "
        f"SELECT $channel, $day, {_BILL_ROW_VALUES} FROM {sql_source(bill.rows_files)}",
        {"channel": channel, "day": day},
    )
