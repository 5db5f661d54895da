"""The floor: plain DuckDB parsing the same bill and ledger and joining them both ways.

``python -m bench.floor --channel wechatpay --bill B --ledger L``

No checks, no quarantine, no amounts: read_csv with the options each format needs,
the key of each row, and a full outer join on (txn_type, merchant_order_id,
merchant_refund_id). Prints the counts as JSON. Nothing recon does can be faster than
this on the same machine; bench.run reports recon's time as a multiple of it.

A gzipped bill (``.csv.gz``) is read as it is: DuckDB's read_csv gunzips by the file's
extension.

``--fields`` makes it a second, higher reference: every field recon compares or
reports is read as well (ids, amounts and fees as minor units, currency, status, times
in the channel's zone, the ledger's created_at) and carried through the join, and the
pairs whose amount, currency, status or channel id differ are counted. Still no checks,
no quarantine, no line numbers, nothing written: what any field-by-field reconciliation
in plain DuckDB must at least spend.

``--temp-dir`` is where DuckDB spills (default: ``.tmp`` in the working folder) and
``--memory-limit`` its memory limit (default: DuckDB's own, 80% of the memory, or of the
memory cgroup's limit when there is one).
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
_TRADE_GBK_AS_LATIN1 = "交易".encode("gbk").decode("latin-1")


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


def _minor(text: str) -> str:
    """Minor units of a decimal string (rounded, not checked: a floor, not a parser)."""
    return f"CAST(CAST(trim({text}) AS DECIMAL(18, 5)) * 100 AS BIGINT)"


def bill_fields_sql(channel: str, bill: Path) -> str:
    """Every field recon takes from the bill, keys first."""
    if channel == "wechatpay":
        c = {n: f'"{i}"' for i, n in enumerate(_WECHAT_COLUMNS)}
        refund = f"({c['交易状态']} = 'REFUND')"
        amount = f"CASE WHEN {refund} THEN {c['申请退款金额']} ELSE {c['订单金额']} END"
        status = f"CASE WHEN {refund} THEN {c['退款状态']} ELSE {c['交易状态']} END"
        local = f"strptime(ltrim({c['交易时间']}, '`'), '%Y-%m-%d %H:%M:%S')"
        return f"""
        SELECT CASE WHEN {refund} THEN 'refund' ELSE 'payment' END AS txn_type,
               trim({c["商户订单号"]}) AS merchant_order_id,
               CASE WHEN {refund} THEN trim({c["商户退款单号"]}) ELSE '' END AS merchant_refund_id,
               trim({c["微信订单号"]}) AS channel_txn_id,
               CASE WHEN {refund} THEN trim({c["微信退款单号"]}) ELSE '' END AS channel_refund_id,
               {_minor(amount)} AS amount_minor, {_minor(c["手续费"])} AS fee_minor,
               upper(trim({c["货币种类"]})) AS currency, trim({status}) AS status,
               timezone('Asia/Shanghai', {local}) AS trade_time
        FROM read_csv('{bill}', delim=',`', header=false, skip=1, quote='', escape='',
                      columns={_columns(_WECHAT_COLUMNS)}, ignore_errors=true, auto_detect=false)
        WHERE {c["商户订单号"]} IS NOT NULL
        """
    c = {n: f'trim("{i}", chr(9))' for i, n in enumerate(_ALIPAY_COLUMNS)}
    refund = f"({c['业务类型']} = '{_REFUND_GBK_AS_LATIN1}')"
    return f"""
    SELECT CASE WHEN {refund} THEN 'refund' ELSE 'payment' END AS txn_type,
           {c["商户订单号"]} AS merchant_order_id,
           CASE WHEN {refund} THEN {c["退款批次号/请求号"]} ELSE '' END AS merchant_refund_id,
           {c["支付宝交易号"]} AS channel_txn_id, '' AS channel_refund_id,
           abs({_minor(c["订单金额（元）"])}) AS amount_minor, {_minor(c["服务费（元）"])} AS fee_minor,
           'CNY' AS currency,
           CASE WHEN {c["业务类型"]} IN ('{_TRADE_GBK_AS_LATIN1}', '{_REFUND_GBK_AS_LATIN1}')
                THEN 'SUCCESS' ELSE {c["业务类型"]} END AS status,  -- the status map
           timezone('Asia/Shanghai', strptime({c["完成时间"]}, '%Y-%m-%d %H:%M:%S')) AS trade_time
    FROM read_csv('{bill}', delim=',', header=false, skip=1, quote='', escape='',
                  encoding='latin-1', comment='#', columns={_columns(_ALIPAY_COLUMNS)},
                  ignore_errors=true, auto_detect=false)
    """


def ledger_fields_sql(channel: str, ledger: Path) -> str:
    return f"""
    SELECT txn_type, merchant_order_id, coalesce(merchant_refund_id, '') AS merchant_refund_id,
           trim(channel_txn_id) AS channel_txn_id, {_minor("amount")} AS amount_minor,
           upper(trim(currency)) AS currency, upper(trim(status)) AS status,
           CAST(created_at AS TIMESTAMPTZ) AS created_at
    FROM read_csv('{ledger}', header=true, all_varchar=true)
    WHERE lower(channel) = '{channel}'
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
    fields: bool = False,
) -> dict[str, int]:
    con = duckdb.connect()
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = ?", [str(temp_dir)])
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if fields:
        b_sql, l_sql = bill_fields_sql(channel, bill), ledger_fields_sql(channel, ledger)
        differ = """count(*) FILTER (WHERE b.p AND l.p AND (
               b.amount_minor IS DISTINCT FROM l.amount_minor
            OR b.currency IS DISTINCT FROM l.currency
            OR (l.channel_txn_id <> '' AND b.channel_txn_id IS DISTINCT FROM l.channel_txn_id)
            OR b.status IS DISTINCT FROM l.status)),
            max(b.fee_minor), max(b.channel_refund_id),
            max(b.trade_time)::VARCHAR, max(l.created_at)::VARCHAR"""
    else:
        b_sql, l_sql = bill_keys_sql(channel, bill), ledger_keys_sql(channel, ledger)
        differ = "NULL"
    sql = f"""
    WITH b AS ({b_sql}), l AS ({l_sql})
    SELECT count(*) FILTER (WHERE b.p AND l.p),
           count(*) FILTER (WHERE l.p IS NULL),
           count(*) FILTER (WHERE b.p IS NULL),
           {differ}
    FROM (SELECT *, true AS p FROM b) b
    FULL OUTER JOIN (SELECT *, true AS p FROM l) l
    USING (txn_type, merchant_order_id, merchant_refund_id)
    """
    # The max()es keep every field's parse in the plan (DuckDB drops unused columns).
    row = con.execute(sql).fetchone()
    assert row is not None
    con.close()
    both, bill_only, ledger_only, differing = row[:4]
    counts = {"both": int(both), "bill_only": int(bill_only), "ledger_only": int(ledger_only)}
    if fields:
        counts["differing"] = int(differing)
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", required=True, choices=["wechatpay", "alipay"])
    ap.add_argument("--bill", type=Path, required=True)
    ap.add_argument("--ledger", type=Path, required=True)
    ap.add_argument("--temp-dir", type=Path, help="where DuckDB spills")
    ap.add_argument("--memory-limit", help="DuckDB's memory_limit, e.g. 2GiB")
    ap.add_argument("--fields", action="store_true", help="read and compare every field too")
    a = ap.parse_args(argv)
    started = time.perf_counter()
    counts = floor(
        a.channel,
        a.bill.resolve(),
        a.ledger.resolve(),
        temp_dir=a.temp_dir,
        memory_limit=a.memory_limit,
        fields=a.fields,
    )
    print(json.dumps({"seconds": time.perf_counter() - started, **counts}))


if __name__ == "__main__":
    main()
