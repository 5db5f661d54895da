"""Three consecutive days of one channel through `recon run`, one store: the break lifecycle.

Day 1 (2024-03-01) to day 3, WeChat Pay, hand-made so every fact is deliberate:
- T1: ledger payment at 23:55 on day 1, billed 00:03 on day 2 -> pending on day 1, auto-resolved by day 2's bill.
- T2: billed 23:58 on day 1, ledger records it 00:02 on day 2 -> pending on day 1, auto-resolved by day 2's ledger.
- LOST: ledger payment at noon on day 1 the channel never bills -> open; an analyst resolves it;
  re-running day 1 does not reopen it.
- LATE: ledger payment at 23:50 on day 1 never billed -> pending on day 1, open after day 2 (T+1).
- DUP: billed twice on day 1 (paid once) -> duplicate_payment; AGAIN: paid on day 1, billed again on day 2.
- P: paid 100.00 on day 1, partial refunds of 30.00 (day 2), 30.00 (day 2) and 50.00 (day 3) -> the
  third passes what was paid: refund_exceeds_payment on day 3; day 2's two refunds are no break.
- FEE: day 2 payment billed with a fee that is not 0.6% -> fee_mismatch.
- SHORT: day 3 payment the channel settled for less than the ledger says -> field_mismatch amount,
  classified PARTIAL_PAYMENT.
"""

from __future__ import annotations

import datetime as dt
import zlib
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from data.generate import Txn, wechat_bill, write_ledger
from recon.audit import transition
from recon.cli import main
from recon.store import open_store

SH = ZoneInfo("Asia/Shanghai")
D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)


def at(day: dt.date, hh: int, mm: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm), SH)


def pay(order: str, fen: int, when: dt.datetime) -> Txn:
    return Txn("wechatpay", "payment", order, "", _txn_id(order), "", fen, when)


def _txn_id(order: str) -> str:
    return f"42000{zlib.crc32(order.encode()):020d}"


def refund(order: str, rid: str, fen: int, when: dt.datetime) -> Txn:
    return Txn(
        "wechatpay",
        "refund",
        order,
        rid,
        _txn_id(order),
        f"50{rid}",
        fen,
        when,
    )


def ledger_row(
    t: Txn, when: dt.datetime | None = None, amount: str | None = None
) -> dict[str, str]:
    return {
        "merchant_order_id": t.order_id, "merchant_refund_id": t.refund_id, "txn_type": t.txn_type,
        "channel": "wechatpay", "channel_txn_id": t.txn_id,
        "amount": amount if amount is not None else _amount(t.amount_fen),
        "currency": "CNY", "status": "SUCCESS", "created_at": (when or t.time).isoformat(),
    }  # fmt: skip


def _amount(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def build(tmp: Path) -> dict[dt.date, tuple[Path, Path]]:
    t1 = pay("T1", 1000, at(D2, 0, 3))
    t2 = pay("T2", 2000, at(D1, 23, 58))
    lost = pay("LOST", 3000, at(D1, 12, 0))
    late = pay("LATE", 4000, at(D1, 23, 50))
    dup = pay("DUP", 5000, at(D1, 9, 0))
    again = pay("AGAIN", 6000, at(D1, 10, 0))
    p = pay("P", 10000, at(D1, 11, 0))
    r1, r2 = refund("P", "P-R1", 3000, at(D2, 9, 0)), refund("P", "P-R2", 3000, at(D2, 10, 0))
    r3 = refund("P", "P-R3", 5000, at(D3, 9, 0))
    fee = pay("FEE", 10000, at(D2, 12, 0))
    short = pay("SHORT", 7000, at(D3, 12, 0))
    ok = {d: pay(f"OK{d.day}", 1234, at(d, 15, 0)) for d in (D1, D2, D3)}

    bills: dict[dt.date, list[Txn]] = {
        D1: [t2, dup, dup, again, p, ok[D1]],
        D2: [t1, again, r1, r2, fee, ok[D2]],
        D3: [r3, short, ok[D3]],
    }
    # The ledger export of each day holds that day's rows plus neighbours (they are filtered).
    ledger = [
        ledger_row(t1, at(D1, 23, 55)), ledger_row(t2, at(D2, 0, 2)), ledger_row(lost),
        ledger_row(late), ledger_row(dup), ledger_row(again), ledger_row(p),
        ledger_row(r1), ledger_row(r2), ledger_row(r3), ledger_row(fee),
        ledger_row(short, amount=_amount(7500)), *(ledger_row(t) for t in ok.values()),
    ]  # fmt: skip
    out: dict[dt.date, tuple[Path, Path]] = {}
    for d, txns in bills.items():
        text = wechat_bill(sorted(txns, key=lambda t: t.time))
        if d == D2:  # the channel charged FEE 1.00 instead of 0.60
            text = text.replace("`0.60000", "`1.00000", 1)
            lines = text.splitlines()
            total = sum(Decimal(ln.split(",`")[22]) for ln in lines[1:-2])
            lines[-1] = ",".join(
                f"`{total:.5f}" if i == 4 else v for i, v in enumerate(lines[-1].split(","))
            )
            text = "\r\n".join(lines) + "\r\n"
        bill = tmp / f"wechatpay_{d:%Y%m%d}_ALL.csv"
        bill.write_text(text, "utf-8")
        led = tmp / f"ledger_{d:%Y%m%d}.csv"
        write_ledger(ledger, led)
        out[d] = (bill, led)
    return out


def run(files: dict[dt.date, tuple[Path, Path]], day: dt.date, store: Path, tmp: Path) -> int:
    bill, led = files[day]
    return main(
        ["run", "--channel", "wechatpay", "--date", day.isoformat(), "--bill", str(bill),
         "--ledger", str(led), "--out", str(tmp / f"out{day}"), "--store", str(store)]
    )  # fmt: skip


def breaks(store: Path) -> dict[tuple[str, str, str], tuple[str, str, str]]:
    """(order, refund, kind) -> (state, reason_code, field) from the store's breaks view."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute(
            "SELECT merchant_order_id, merchant_refund_id, kind, state, reason_code, field FROM breaks"
        ).fetchall()
    finally:
        con.close()
    return {(o, r, k): (s, c, f) for o, r, k, s, c, f in rows}


def audit(store: Path, order: str) -> list[tuple[str, str, str | None, str]]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return [
            (a, actor, f, t)
            for a, actor, f, t in con.execute(
                "SELECT action, actor, from_state, to_state FROM audit_log JOIN break_items USING (break_id) "
                "WHERE merchant_order_id = ? ORDER BY seq",
                [order],
            ).fetchall()
        ]
    finally:
        con.close()


@pytest.fixture
def days(tmp_path: Path) -> dict[dt.date, tuple[Path, Path]]:
    return build(tmp_path)


def test_three_days_of_breaks(days: dict[dt.date, tuple[Path, Path]], tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    assert run(days, D1, store, tmp_path) == 1
    b = breaks(store)
    assert b[("T1", "", "channel_missing")][:2] == ("pending_timing", "TIMING_CUTOFF")
    assert b[("T2", "", "local_missing")][:2] == ("pending_timing", "TIMING_CUTOFF")
    assert b[("LATE", "", "channel_missing")][0] == "pending_timing"
    assert b[("LOST", "", "channel_missing")][0] == "open"
    assert b[("DUP", "", "duplicate_payment")][:2] == ("open", "DUPLICATE_IN_BILL")

    # An analyst resolves LOST; re-running day 1 neither reopens nor duplicates anything.
    with open_store(store) as con:
        (break_id,) = con.execute(
            "SELECT break_id FROM breaks WHERE merchant_order_id = 'LOST'"
        ).fetchone() or (0,)
        transition(
            con, int(break_id), "resolved", "alice", "resolve", "refunded to the customer by hand"
        )
    before = breaks(store)
    assert run(days, D1, store, tmp_path) == 1
    assert breaks(store) == before

    assert run(days, D2, store, tmp_path) == 1
    b = breaks(store)
    assert b[("T1", "", "channel_missing")][0] == "auto_resolved"  # day 2's bill has it
    assert b[("T2", "", "local_missing")][0] == "auto_resolved"  # day 2's ledger has it
    assert ("T1", "", "local_missing") not in b  # the counterpart is no break
    assert ("T2", "", "channel_missing") not in b
    assert b[("LATE", "", "channel_missing")][0] == "open"  # T+1 passed without it
    assert b[("AGAIN", "", "duplicate_payment")][:2] == ("open", "DUPLICATE_ACROSS_BILLS")
    assert b[("FEE", "", "fee_mismatch")] == ("open", "FEE_RATE", "fee")
    assert not [k for k in b if k[0] == "P"]  # two partial refunds within what was paid
    assert b[("LOST", "", "channel_missing")][0] == "resolved"

    assert run(days, D3, store, tmp_path) == 1
    b = breaks(store)
    assert b[("P", "P-R3", "refund_exceeds_payment")][:2] == ("open", "REFUNDS_EXCEED_PAYMENT")
    assert b[("SHORT", "", "field_mismatch")] == ("open", "PARTIAL_PAYMENT", "amount")
    assert not [k for k in b if k[0].startswith("OK")]

    # The audit log tells each story, in order, with who did what.
    assert audit(store, "T1") == [
        ("detected", "recon", None, "pending_timing"),
        ("timing_match", "recon", "pending_timing", "auto_resolved"),
    ]
    assert audit(store, "LATE") == [
        ("detected", "recon", None, "pending_timing"),
        ("timing_window_passed", "recon", "pending_timing", "open"),
    ]
    assert audit(store, "LOST") == [
        ("detected", "recon", None, "open"),
        ("resolve", "alice", "open", "resolved"),
    ]
    con = duckdb.connect(str(store), read_only=True)
    evidence = con.execute("SELECT evidence FROM breaks WHERE merchant_order_id = 'T1'").fetchone()
    con.close()
    assert evidence is not None
    assert f"wechatpay_{D2:%Y%m%d}_ALL.csv" in str(evidence[0])


def test_channel_requery_answer_is_recorded_on_the_break(
    days: dict[dt.date, tuple[Path, Path]], tmp_path: Path
) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(
        '{"wechatpay/payment/LOST/": {"status": "CLOSED", "note": "closed by the channel at 12:05"}}',
        "utf-8",
    )
    store = tmp_path / "store.duckdb"
    bill, led = days[D1]
    code = main(
        ["run", "--channel", "wechatpay", "--date", D1.isoformat(), "--bill", str(bill),
         "--ledger", str(led), "--out", str(tmp_path / "o"), "--store", str(store),
         "--requery-answers", str(answers)]
    )  # fmt: skip
    assert code == 1
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute(
            "SELECT merchant_order_id, reason_code, requery_status, requery_note FROM breaks "
            "WHERE requery_status IS NOT NULL"
        ).fetchall()
        note = con.execute(
            "SELECT note FROM audit_log JOIN break_items USING (break_id) "
            "WHERE merchant_order_id = 'LOST'"
        ).fetchone()
    finally:
        con.close()
    assert rows == [("LOST", "CHANNEL_CLOSED", "CLOSED", "closed by the channel at 12:05")]
    assert note is not None
    assert "re-query says CLOSED" in str(note[0])
