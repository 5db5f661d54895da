"""Breaks, summary and the store's bill_rows from a day's Parquet parts (no whole-day frame)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest

from recon import bill_history as history
from recon.breaks import BreakUpdate, update_breaks
from recon.engine import diff
from recon.queues import build_queues
from recon.rules import Channel, load_rules
from recon.sides import SIDE_SCHEMA, bill_side
from recon.store import MIGRATIONS, open_store
from recon.summary import build_summary
from tests.frames import bill_rows, ledger_day, ledger_rows, parsed_bill

D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
FILES = {"bill_file": "bill.csv", "bill_sha256": "b" * 64, "ledger_file": "l.csv"}
FILES |= {"ledger_sha256": "l" * 64}


def utc(day: dt.date, hh: int, mm: int = 0) -> dt.datetime:
    """hh:mm in Shanghai (UTC+8) on ``day``, as UTC."""
    return dt.datetime.combine(day, dt.time(hh, mm), dt.UTC) - dt.timedelta(hours=8)


def pay(order: str, fen: int, day: dt.date = D1, **kw: Any) -> dict[str, Any]:
    return {"merchant_order_id": order, "amount_minor": fen, "trade_time": utc(day, 12),
            "business_date": day, **kw}  # fmt: skip


def refund(order: str, rid: str, fen: int, day: dt.date = D1) -> dict[str, Any]:
    return pay(order, fen, day, txn_type="refund", merchant_refund_id=rid,
               fee_minor=-((fen * 6 + 500) // 1000))  # fmt: skip


def in_ledger(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("merchant_order_id", "merchant_refund_id", "txn_type", "amount_minor")
    return {k: v for k, v in row.items() if k in keep} | {"created_at": row["trade_time"]}


@pytest.fixture(scope="module")
def channel() -> Channel:
    return load_rules(Path("rules/channels.toml")).channel("wechatpay")


def run_day(
    con: duckdb.DuckDBPyConnection,
    channel: Channel,
    day: dt.date,
    billed: list[dict[str, Any]],
    booked: list[dict[str, Any]],
    work: Path,
) -> tuple[BreakUpdate, dict[str, Any]]:
    bdf, ldf = bill_rows(billed), ledger_rows(booked)
    bill = parsed_bill(bdf, work / f"bill-{day}", parts=2)
    ledger = ledger_day(ldf, work / f"ledger-{day}", parts=3)
    result = diff(ldf.select(list(SIDE_SCHEMA)), bill_side(bdf), channel.settled_statuses)
    queues = build_queues(result, channel.name, day)
    summary = build_summary(channel.name, day, bill, ledger, result.counts, queues, FILES)
    return update_breaks(con, channel, day, bill, ledger, result, queues, FILES), summary


def breaks(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], tuple[str, str]]:
    rows = con.execute(
        "SELECT merchant_order_id, merchant_refund_id, kind, state, reason_code FROM break_items"
    ).fetchall()
    return {(o, r, k): (s, c) for o, r, k, s, c in rows}


DAY1 = [
    pay("OK", 10000),
    pay("DUP", 5000),
    pay("DUP", 5000),
    pay("FEE", 10000, fee_minor=100),  # 0.6% of 100.00 is 0.60, not 1.00
    pay("ONLY", 2000),  # the ledger never has it
    pay("AGAIN", 3000),  # billed again on day 2
    pay("P", 10000),
    refund("P", "P-R1", 6000),
    pay("PR", 10000),
]
LEDGER1 = [in_ledger(r) for r in DAY1 if r["merchant_order_id"] not in ("ONLY", "DUP")]
LEDGER1 += [in_ledger(DAY1[1])]
LEDGER1 += [{"merchant_order_id": "GONE", "amount_minor": 700, "created_at": utc(D1, 23, 55)}]
DAY2 = [
    pay("AGAIN", 3000, D2),
    refund("P", "P-R2", 5000, D2),  # 60.00 + 50.00 refunded of 100.00 paid on day 1
    refund("PR", "PR-R1", 3000, D2),
    refund("PR", "PR-R2", 3000, D2),  # the ledger lacks it: a partial refund
    pay("NEXT", 100, D2, business_date=D1),  # across midnight: a row of another day
]
LEDGER2 = [in_ledger(r) for r in DAY2 if r.get("merchant_refund_id") != "PR-R2"]
LEDGER2 = [r for r in LEDGER2 if r["merchant_order_id"] != "AGAIN"]


def test_two_days_from_parts(channel: Channel, tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as con:
        update, summary = run_day(con, channel, D1, DAY1, LEDGER1, tmp_path)
        assert update.new == 4
        assert breaks(con) == {
            ("DUP", "", "duplicate_payment"): ("open", "DUPLICATE_IN_BILL"),
            ("ONLY", "", "local_missing"): ("open", ""),
            ("FEE", "", "fee_mismatch"): ("open", "FEE_RATE"),
            ("GONE", "", "channel_missing"): ("pending_timing", "TIMING_CUTOFF"),
        }
        assert summary["bill"]["rows_parsed"] == len(DAY1)
        assert summary["ledger"]["rows_parsed"] == len(LEDGER1)
        assert summary["bill"]["rows_on_other_days"] == 0
        gross = sum(r["amount_minor"] for r in DAY1 if "merchant_refund_id" not in r)
        assert summary["settlement"]["CNY"]["gross"] == f"{gross // 100}.{gross % 100:02d}"
        assert summary["settlement"]["CNY"]["refunds"] == "60.00"

        for _ in range(2):  # a re-run of day 2 replaces its bill rows and its breaks
            update, summary = run_day(con, channel, D2, DAY2, LEDGER2, tmp_path)
            b = breaks(con)
            assert b[("AGAIN", "", "duplicate_payment")] == ("open", "DUPLICATE_ACROSS_BILLS")
            assert b[("P", "P-R2", "refund_exceeds_payment")] == ("open", "REFUNDS_EXCEED_PAYMENT")
            assert b[("PR", "PR-R2", "local_missing")] == ("open", "PARTIAL_REFUNDS")
            assert b[("GONE", "", "channel_missing")][0] == "open"  # T+1 passed
            assert summary["bill"]["rows_on_other_days"] == 1
            stored = con.execute(
                "SELECT business_date, count(*) FROM bill_rows GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            assert stored == [(D1, len(DAY1)), (D2, len(DAY2))]
        assert update.new == 0


def test_break_ids_follow_identity_not_the_order_rows_come_in(
    channel: Channel, tmp_path: Path
) -> None:
    """Two stores given the same day with its rows in opposite orders number the new
    breaks alike: by identity, ids continuing from the breaks already there."""
    billed = [pay(f"B{i}", 100 + i, D2) for i in range(6)] + [pay("TWICE", 5, D2)] * 2
    booked = [in_ledger(pay(f"L{i}", 200 + i, D2)) for i in range(5)] + [in_ledger(billed[-1])]
    numbered = []
    for name, order in (("a", 1), ("b", -1)):
        work = tmp_path / name
        with open_store(work / "s.duckdb") as con:
            run_day(con, channel, D1, DAY1, LEDGER1, work)  # ids 1-4 already taken
            run_day(con, channel, D2, billed[::order], booked[::order], work)
            numbered.append(
                con.execute(
                    "SELECT break_id, merchant_order_id, kind FROM break_items "
                    "WHERE first_seen = ? ORDER BY break_id",
                    [D2],
                ).fetchall()
            )
    assert numbered[0] == numbered[1]
    ids = [i for i, _, _ in numbered[0]]
    assert ids == list(range(5, 5 + len(ids)))
    assert [(o, k) for _, o, k in numbered[0]] == sorted((o, k) for _, o, k in numbered[0])
    assert len(ids) == 6 + 5 + 1  # local-missing, channel-missing, the duplicate


def test_fee_mismatch_and_amounts_come_from_every_part(channel: Channel, tmp_path: Path) -> None:
    rows = [pay(f"O{i}", 10000 + i, fee_minor=60) for i in range(7)]  # 100.0i: fee 0.60 -> ok
    rows[5]["fee_minor"] = 61
    with open_store(tmp_path / "s.duckdb") as con:
        run_day(con, channel, D1, rows, [in_ledger(r) for r in rows], tmp_path)
        got = con.execute("SELECT merchant_order_id, kind, bill_line FROM break_items").fetchall()
    assert got == [("O5", "fee_mismatch", 7)]


def test_an_empty_day_has_one_empty_part(channel: Channel, tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as con:
        update, summary = run_day(con, channel, D1, [], [], tmp_path)
        assert con.execute("SELECT count(*) FROM bill_rows").fetchone() == (0,)
    assert update.new == 0
    assert summary["settlement"] == {}
    assert summary["bill"]["rows_parsed"] == summary["bill"]["rows_on_other_days"] == 0


def test_bill_rows_keep_only_what_the_cross_day_checks_read(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with duckdb.connect(str(db)) as con:  # a store of version 3 with a day's rows
        con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, sql in enumerate(MIGRATIONS[:3], 1):
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?)", [version])
        con.execute(
            "INSERT INTO bill_rows VALUES ('wechatpay', DATE '2024-03-01', 'payment', 'A', '', "
            "'T1', 100, 1, 'CNY', 'SUCCESS', TIMESTAMPTZ '2024-03-01 04:00:00+00', 'b.csv', 2)"
        )
    with open_store(db) as con:
        cols = [r[0] for r in con.execute("DESCRIBE bill_rows").fetchall()]
        rows = con.execute("SELECT * FROM bill_rows").fetchall()
    assert cols == [
        "channel", "business_date", "txn_type", "merchant_order_id", "merchant_refund_id",
        "amount_minor",
    ]  # fmt: skip
    assert rows == [("wechatpay", D1, "payment", "A", "", 100)]


def test_local_missing_takes_its_time_from_its_own_row(channel: Channel, tmp_path: Path) -> None:
    billed = [pay("X", 100), pay("Y", 100), pay("ONLY", 2000, trade_time=utc(D1, 23, 58))]
    with open_store(tmp_path / "s.duckdb") as con:
        run_day(con, channel, D1, billed, [in_ledger(r) for r in billed[:2]], tmp_path)
        got = con.execute("SELECT kind, state, reason_code, bill_line FROM break_items").fetchall()
    assert got == [("local_missing", "pending_timing", "TIMING_CUTOFF", 4)]


def test_refunds_over_payment_raise_on_the_last_refund(channel: Channel, tmp_path: Path) -> None:
    billed = [
        pay("P", 10000),
        refund("P", "P-R2", 6000),
        refund("Q", "Q-R1", 100),  # no bill has a payment of Q: not checked
        refund("P", "P-R1", 5000),  # the last of P's refunds, in the bill's second part
        pay("OK", 10000),
        refund("OK", "OK-R1", 10000),  # refunded in full: not over
    ]
    with open_store(tmp_path / "s.duckdb") as con:
        run_day(con, channel, D1, billed, [in_ledger(r) for r in billed], tmp_path)
        got = con.execute(
            "SELECT merchant_order_id, merchant_refund_id, kind, amount_minor, ledger_value, "
            "channel_value, bill_line FROM break_items"
        ).fetchall()
    assert got == [("P", "P-R1", "refund_exceeds_payment", 1000, "100.00", "110.00", 5)]


@pytest.mark.parametrize("history_days", [2, 1])
def test_checks_across_days_look_back_history_days_and_older_rows_go(
    channel: Channel, tmp_path: Path, history_days: int
) -> None:
    """Day 3 bills A and Q again and refunds P and Q beyond their payments of day 1. Kept
    two days back, day 1 is seen; kept one, it is not, and its rows leave the store (not
    another channel's)."""
    d3 = D1 + dt.timedelta(days=2)
    kept = replace(channel, breaks=replace(channel.breaks, history_days=history_days))
    day1 = [pay("A", 3000), pay("P", 10000), pay("Q", 5000)]
    day3 = [
        pay("A", 3000, d3),
        pay("Q", 5000, d3),  # Q both billed again and refunded: looked up once
        refund("P", "P-R1", 12000, d3),
        refund("Q", "Q-R1", 12000, d3),
    ]
    with open_store(tmp_path / "s.duckdb") as con:
        con.execute(
            "INSERT INTO bill_rows VALUES ('alipay', DATE '2024-02-01', 'payment', 'A', '', 1)"
        )
        run_day(con, kept, D1, day1, [in_ledger(r) for r in day1], tmp_path)
        run_day(con, kept, d3, day3, [in_ledger(r) for r in day3[2:]], tmp_path)
        got = breaks(con)
        left = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name IN "
            "('_earlier', '_lookup_keys', '_refunded')"
        ).fetchall()
        assert left == []  # the look-up's tables go once the checks have read them
        stored = con.execute(
            "SELECT channel, business_date, count(*) FROM bill_rows GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    over = ("open", "REFUNDS_EXCEED_PAYMENT")
    if history_days == 2:
        assert got == {
            ("A", "", "duplicate_payment"): ("open", "DUPLICATE_ACROSS_BILLS"),
            ("Q", "", "duplicate_payment"): ("open", "DUPLICATE_ACROSS_BILLS"),
            ("P", "P-R1", "refund_exceeds_payment"): over,  # 120.00 of 100.00
            ("Q", "Q-R1", "refund_exceeds_payment"): over,  # 120.00 of 50.00 + 50.00
        }
        assert stored == [
            ("alipay", dt.date(2024, 2, 1), 1),
            ("wechatpay", D1, 3),
            ("wechatpay", d3, 4),
        ]
    else:
        assert got == {
            ("A", "", "local_missing"): ("open", ""),
            ("Q", "", "local_missing"): ("open", ""),
            ("Q", "Q-R1", "refund_exceeds_payment"): over,  # 120.00 of today's 50.00
        }  # P's payment is out of the window: P is not checked
        assert stored == [("alipay", dt.date(2024, 2, 1), 1), ("wechatpay", d3, 4)]


def test_a_failing_look_up_reports_its_own_error_inside_a_transaction(tmp_path: Path) -> None:
    """In an aborted transaction every statement fails: the look-up must not clean up
    there, or its cleanup's error would stand in for the first one."""
    gone = parsed_bill(bill_rows([pay("A", 100)]), tmp_path / "bill", parts=1)
    for part in gone.rows_files:
        part.unlink()
    keys = bill_rows([]).select("txn_type", "merchant_order_id", "merchant_refund_id")
    with open_store(tmp_path / "s.duckdb") as con:
        con.execute("BEGIN")
        with pytest.raises(duckdb.IOException), history.looked_up(con, "wx", D1, 5, gone, keys):
            pass
        con.execute("ROLLBACK")
