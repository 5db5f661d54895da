"""The floor: plain DuckDB parsing the same bill and ledger and joining them both ways.

``python -m bench.floor --channel wechatpay --bill B --ledger L``

No checks, no quarantine, no amounts: read_csv with the options each format needs,
the key of each row, and a full outer join on (txn_type, merchant_order_id,
merchant_refund_id). Prints the counts as JSON. Nothing recon does can be faster than
this on the same machine; bench.run reports recon's time as a multiple of it.

A gzipped bill (``.csv.gz``) is read as it is: DuckDB's read_csv gunzips by the file's
extension. ``--temp-dir`` is where DuckDB spills (default: ``.tmp`` in the working
folder) and ``--memory-limit`` its memory limit (default: DuckDB's own, 80% of the
memory, or of the memory cgroup's limit when there is one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb

from data.generate import ALIPAY_HEADER, WECHAT_HEADER

# The bill's columns as DuckDB reads them: header names are given, not read (the WeChat
# header uses plain commas between names, and the Alipay one is GBK).
_WECHAT_COLUMNS = WECHAT_HEADER.split(",")
_ALIPAY_COLUMNS = ALIPAY_HEADER.split(",")
# DuckDB has no GBK decoder without an extension; Latin-1 maps every byte to one
# character, so the ASCII ids and keys come through exactly, and so does 退款 as bytes.
_REFUND_GBK_AS_LATIN1 = "退款".encode("gbk").decode("latin-1")


def _columns(names: list[str]) -> str:
    return "{" + ", ".join(f"'{i}': 'VARCHAR'" for i in range(len(names))) + "}"


def bill_keys_sql(channel: str, bill: Path) -> str:
    if channel == "wechatpay":
        cols = _WECHAT_COLUMNS
        order, status, refund = (
            cols.index("商户订单号"),
            cols.index("交易状态"),
            cols.index("商户退款单号"),
        )
        return f"""
        SELECT CASE WHEN "{status}" = 'REFUND' THEN 'refund' ELSE 'payment' END AS txn_type,
               "{order}" AS merchant_order_id,
               CASE WHEN "{status}" = 'REFUND' THEN "{refund}" ELSE '' END AS merchant_refund_id
        FROM read_csv('{bill}', delim=',`', header=false, skip=1, quote='', escape='',
                      columns={_columns(cols)}, ignore_errors=true, auto_detect=false)
        WHERE "{order}" IS NOT NULL
        """
    cols = _ALIPAY_COLUMNS
    order, kind, refund = (
        cols.index("商户订单号"),
        cols.index("业务类型"),
        cols.index("退款批次号/请求号"),
    )
    tab = "chr(9)"
    return f"""
    SELECT CASE WHEN trim("{kind}", {tab}) = '{_REFUND_GBK_AS_LATIN1}' THEN 'refund'
                ELSE 'payment' END AS txn_type,
           trim("{order}", {tab}) AS merchant_order_id,
           CASE WHEN trim("{kind}", {tab}) = '{_REFUND_GBK_AS_LATIN1}'
                THEN trim("{refund}", {tab}) ELSE '' END AS merchant_refund_id
    FROM read_csv('{bill}', delim=',', header=false, skip=1, quote='', escape='',
                  encoding='latin-1', comment='#', columns={_columns(cols)},
                  ignore_errors=true, auto_detect=false)
    """


def ledger_keys_sql(channel: str, ledger: Path) -> str:
    return f"""
    SELECT txn_type, merchant_order_id, coalesce(merchant_refund_id, '') AS merchant_refund_id
    FROM read_csv('{ledger}', header=true, all_varchar=true)
    WHERE lower(channel) = '{channel}'
    """


def floor(
    channel: str,
    bill: Path,
    ledger: Path,
    *,
    temp_dir: Path | None = None,
    memory_limit: str | None = None,
) -> dict[str, int]:
    con = duckdb.connect()
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = ?", [str(temp_dir)])
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    sql = f"""
    WITH b AS ({bill_keys_sql(channel, bill)}), l AS ({ledger_keys_sql(channel, ledger)})
    SELECT count(*) FILTER (WHERE b.txn_type IS NOT NULL AND l.txn_type IS NOT NULL),
           count(*) FILTER (WHERE l.txn_type IS NULL),
           count(*) FILTER (WHERE b.txn_type IS NULL)
    FROM (SELECT *, 1 AS p FROM b) b
    FULL OUTER JOIN (SELECT *, 1 AS p FROM l) l
    USING (txn_type, merchant_order_id, merchant_refund_id)
    """
    (row,) = con.sql(sql).fetchall()
    con.close()
    both, bill_only, ledger_only = (int(x) for x in row)
    return {"both": both, "bill_only": bill_only, "ledger_only": ledger_only}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", required=True, choices=["wechatpay", "alipay"])
    ap.add_argument("--bill", type=Path, required=True)
    ap.add_argument("--ledger", type=Path, required=True)
    ap.add_argument("--temp-dir", type=Path, help="where DuckDB spills")
    ap.add_argument("--memory-limit", help="DuckDB's memory_limit, e.g. 2GiB")
    a = ap.parse_args(argv)
    started = time.perf_counter()
    counts = floor(
        a.channel,
        a.bill.resolve(),
        a.ledger.resolve(),
        temp_dir=a.temp_dir,
        memory_limit=a.memory_limit,
    )
    print(json.dumps({"seconds": time.perf_counter() - started, **counts}))


if __name__ == "__main__":
    main()
