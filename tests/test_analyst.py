"""recon breaks list/show/assign/comment/resolve/write-off/reopen over a real DuckDB store."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.analyst import (
    ACTIONS,
    BreakError,
    BreakFilter,
    Request,
    act,
    audit_history,
    list_breaks,
    problem,
    source_line,
)
from recon.cli import main
from recon.store import CLOSED_STATES, migrate, open_store

DAY = dt.date(2024, 3, 1)
TODAY = dt.datetime.now(dt.UTC).date()  # the store's current_date (its time zone is UTC)
EVIL = "=cmd|' /C calc'!A0"


@dataclass(frozen=True)
class BreakRow:
    """A break_items row as the nightly run would write it (defaults for the rest)."""

    channel: str = "wechatpay"
    txn_type: str = "payment"
    merchant_order_id: str = "O1"
    merchant_refund_id: str = ""
    kind: str = "local_missing"
    field: str = ""
    business_date: dt.date = DAY
    state: str = "open"
    reason_code: str = ""
    amount_minor: int | None = 1000
    currency: str | None = "CNY"
    amount: str | None = None
    ledger_value: str | None = None
    channel_value: str | None = None
    first_seen: dt.date = DAY
    bill_file: str | None = None
    bill_line: int | None = None
    ledger_file: str | None = None
    ledger_row: int | None = None
    assignee: str | None = None


def add_break(con: duckdb.DuckDBPyConnection, row: BreakRow) -> int:
    values = asdict(row)
    values["last_seen"] = row.first_seen
    cols = list(values)
    got = con.execute(
        f"INSERT INTO break_items ({', '.join(cols)}, updated_at) "
        f"VALUES ({', '.join('?' * len(cols))}, now()) RETURNING break_id",
        list(values.values()),
    ).fetchone()
    assert got is not None
    return int(got[0])


def make_store(path: Path, rows: list[BreakRow]) -> list[int]:
    with open_store(path) as con:
        return [add_break(con, r) for r in rows]


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def audit_rows(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db, "SELECT CAST(logged_at AS VARCHAR), * EXCLUDE (logged_at) FROM audit_log ORDER BY seq"
    )


def state_of(db: Path, break_id: int) -> str:
    return str(query(db, "SELECT state FROM break_items WHERE break_id = ?", [break_id])[0][0])


@dataclass
class Out:
    code: int
    stdout: str
    stderr: str


def cli(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> Out:
    capsys.readouterr()
    code = main(["breaks", *argv, "--store", str(db)])
    got = capsys.readouterr()
    return Out(code, got.out, got.err)


def one_line_error(out: Out) -> str:
    assert out.code == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("recon: error:")
    return lines[0]


# --- list --------------------------------------------------------------------------------------

ROWS = [
    # 1: old, assigned, exactly 100.00 CNY, an id Excel would mangle
    BreakRow(merchant_order_id="00012345", amount_minor=10000, assignee="alice",
             first_seen=TODAY - dt.timedelta(days=10)),
    # 2: 99.99 CNY, pending, a mismatch
    BreakRow(merchant_order_id="O2", business_date=dt.date(2024, 3, 2), state="pending_timing",
             kind="field_mismatch", field="amount", amount_minor=9999, ledger_value="99.99",
             channel_value="100.00", first_seen=TODAY - dt.timedelta(days=1)),
    # 3: 100 JPY (no decimals)
    BreakRow(channel="alipay", merchant_order_id="O3", business_date=dt.date(2024, 3, 3),
             kind="channel_missing", amount_minor=100, currency="JPY", first_seen=TODAY),
    # 4: closed
    BreakRow(channel="alipay", merchant_order_id="O4", kind="fee_mismatch", field="fee",
             state="resolved", amount_minor=50000),
    # 5: no amount at all, a formula in its id
    BreakRow(merchant_order_id=EVIL, business_date=dt.date(2024, 3, 5), kind="duplicate_payment",
             amount_minor=None, currency=None),
    # 6: 100.001 KWD (three decimals)
    BreakRow(channel="alipay", merchant_order_id="O6", amount_minor=100001, currency="KWD",
             amount="100.001", assignee="张三"),
]  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "s.duckdb"
    assert make_store(path, ROWS) == [1, 2, 3, 4, 5, 6]
    return path


def listed(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> list[int]:
    out = cli(capsys, db, "list", "--format", "json", *argv)
    assert out.code == 0, out.stderr
    return [int(b["break_id"]) for b in json.loads(out.stdout)]


@pytest.mark.parametrize(
    ("argv", "ids"),
    [
        ((), [1, 2, 3, 5, 6]),  # default: not closed
        (("--state", "resolved"), [4]),
        (("--state", "open", "--state", "resolved"), [1, 3, 4, 5, 6]),
        (("--channel", "alipay"), [3, 6]),
        (("--channel", "alipay", "--channel", "wechatpay"), [1, 2, 3, 5, 6]),
        (("--from", "2024-03-02"), [2, 3, 5]),
        (("--to", "2024-03-02"), [1, 2, 6]),
        (("--from", "2024-03-02", "--to", "2024-03-03"), [2, 3]),
        (("--kind", "local_missing"), [1, 6]),
        (("--kind", "field_mismatch", "--kind", "channel_missing"), [2, 3]),
        (("--min-age", "5"), [1, 5, 6]),  # 5 and 6 were first seen on DAY, long ago
        (("--min-age", "0"), [1, 2, 3, 5, 6]),
        (("--assignee", "alice"), [1]),
        (("--assignee", "张三"), [6]),
        # exact money: 100.00 CNY and 100 JPY pass 100, 99.99 CNY does not, no amount never does
        (("--min-amount", "100"), [1, 3, 6]),
        (("--min-amount", "99.99"), [1, 2, 3, 6]),  # 99.99 * 100 is 9998.999... as a float
        (("--min-amount", "100.001"), [6]),  # more decimals than CNY/JPY: ceil, not round
        (("--min-amount", "100.0011"), []),
        (("--channel", "wechatpay", "--min-amount", "50", "--min-age", "1"), [1, 2]),
    ],
)
def test_each_filter_filters(
    capsys: pytest.CaptureFixture[str], db: Path, argv: tuple[str, ...], ids: list[int]
) -> None:
    assert listed(capsys, db, *argv) == ids


def test_filter_function_matches_cli(db: Path) -> None:
    with open_store(db) as con:
        got = list_breaks(con, BreakFilter(min_amount=Decimal("99.99"), channels=("wechatpay",)))
    assert [(b.break_id, b.amount, b.currency) for b in got] == [
        (1, "100.00", "CNY"),
        (2, "99.99", "CNY"),
    ]


@pytest.mark.parametrize(
    "argv",
    [("--min-amount", "1e3"), ("--min-amount", "-1"), ("--min-age", "x"), ("--from", "3/1"),
     ("--state", "closed")],
)  # fmt: skip
def test_bad_filter_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], db: Path, argv: tuple[str, ...]
) -> None:
    one_line_error(cli(capsys, db, "list", *argv))


def test_table_is_aligned_and_complete(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    out = cli(capsys, db, "list", "--state", "open", "--state", "pending_timing")
    assert out.code == 0
    lines = out.stdout.splitlines()
    assert lines[-1] == "5 break(s)"
    header, rows = lines[0], lines[1:-1]
    assert header.split() == [
        "id", "channel", "date", "kind", "field", "state", "reason_code", "txn_type", "order",
        "refund", "amount", "currency", "age", "assignee",
    ]  # fmt: skip
    assert len(rows) == 5
    first = rows[0]
    assert "00012345" in first
    assert "100.00" in first
    assert "alice" in first
    # the date column starts at the same offset on every line (ids are right-aligned)
    assert {line.index("2024-03-0") for line in rows} == {header.index("date")}
    # amounts right-aligned: they end where the header's "amount" ends
    end = header.index("amount") + len("amount")
    assert rows[0][:end].endswith("100.00")
    assert rows[1][:end].endswith("99.99")


def test_csv_and_json_formats(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    out = cli(capsys, db, "list", "--format", "csv", "--kind", "duplicate_payment")
    assert out.code == 0
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["break_id"] for r in rows] == ["5"]
    assert rows[0]["merchant_order_id"] == "'" + EVIL  # formula-safe
    assert rows[0]["amount"] == ""
    data = json.loads(cli(capsys, db, "list", "--format", "json").stdout)
    assert data[0]["merchant_order_id"] == "00012345"
    assert data[0]["amount"] == "100.00"
    assert data[0]["amount_minor"] == 10000
    assert data[0]["age_days"] == 10


# --- show ----------------------------------------------------------------------------------


class _GbkZipInfo(zipfile.ZipInfo):
    """An entry name written as GBK without the UTF-8 flag, as Alipay does."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # noqa: N802 (CPython's name)
        return self.filename.encode("gbk"), self.flag_bits


BILL = ["交易时间,商户订单号,金额", "2024-03-01 10:00:00,O1,10.00", "2024-03-01 11:00:00,O2,12.50"]


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, str]:
    """The same bill as a UTF-8 file, a gzip, and a GBK zip entry with a GBK name."""
    text = "\r\n".join(BILL) + "\r\n"
    plain = tmp_path / "bill.csv"
    plain.write_bytes(b"\xef\xbb\xbf" + text.encode())
    gz = tmp_path / "bill.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    zpath = tmp_path / "alipay.csv.zip"
    name = "20880211096256330156_20240301_业务明细.csv"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(_GbkZipInfo("readme.txt"), b"not this one\n")
        zf.writestr(_GbkZipInfo(name), text.encode("gbk"))
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("merchant_order_id,amount\nO9,1.00\nO1,10.00\n", encoding="utf-8")
    return {"plain": str(plain), "gz": str(gz), "zip": f"{zpath}!{name}", "ledger": str(ledger)}


@pytest.mark.parametrize("kind", ["plain", "gz", "zip"])
@pytest.mark.parametrize("line", [1, 3])
def test_show_prints_the_raw_bill_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    sources: dict[str, str],
    kind: str,
    line: int,
) -> None:
    db = tmp_path / "s.duckdb"
    make_store(db, [BreakRow(bill_file=sources[kind], bill_line=line, ledger_file=sources["ledger"], ledger_row=2)])  # fmt: skip
    out = cli(capsys, db, "show", "1")
    assert out.code == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index(f"raw bill line {line}:")
    assert lines[at + 1] == "  " + BILL[line - 1]  # decoded (UTF-8 BOM / GBK), no line ending
    at = lines.index("raw ledger row 2:")
    assert lines[at + 1] == "  O1,10.00"  # data row 2 = physical line 3
    assert f"bill:   {sources[kind]} line {line}" in out.stdout


def test_show_every_column_comments_and_history(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    assert (
        cli(capsys, db, "comment", "1", "--text", "asked the channel", "--actor", "bob").code == 0
    )
    assert cli(capsys, db, "resolve", "1", "--reason", "refund booked", "--actor", "bob").code == 0
    out = cli(capsys, db, "show", "1")
    assert out.code == 0
    for column in ("break_id", "merchant_order_id", "occurrence", "first_seen", "resolution",
                   "requery_status", "updated_at", "age_days"):  # fmt: skip
        assert f"\n  {column}:" in out.stdout
    assert "resolution:         refund booked" in out.stdout
    assert "bob: asked the channel" in out.stdout
    assert "audit history (2)" in out.stdout
    assert "bob  resolve  open -> resolved  refund booked" in out.stdout
    assert "raw bill line: none recorded" in out.stdout


def test_show_says_when_files_are_gone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sources: dict[str, str]
) -> None:
    db = tmp_path / "s.duckdb"
    zip_path = sources["zip"].split("!")[0]
    make_store(db, [
        BreakRow(bill_file=str(tmp_path / "gone.csv"), bill_line=2,
                 ledger_file=str(tmp_path / "gone.parquet"), ledger_row=1),
        BreakRow(merchant_order_id="O2", bill_file=sources["plain"], bill_line=99),
        BreakRow(merchant_order_id="O3", bill_file=f"{zip_path}!missing.csv", bill_line=1),
    ])  # fmt: skip
    out = cli(capsys, db, "show", "1")
    assert out.code == 0
    assert f"raw bill line: unavailable ({tmp_path / 'gone.csv'}: file not found)" in out.stdout
    assert "raw ledger row: unavailable (" in out.stdout
    assert "has 3 lines, not 99" in cli(capsys, db, "show", "2").stdout
    assert "has no entry 'missing.csv'" in cli(capsys, db, "show", "3").stdout


def test_source_line_reads_gbk_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("标题\n第二行,金额\n".encode("gbk"))
    assert source_line(str(path), 2) == "第二行,金额"


def test_show_unknown_break(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    assert one_line_error(cli(capsys, db, "show", "99")) == "recon: error: no break 99"


# --- actions -------------------------------------------------------------------------------


@pytest.fixture
def grows(db: Path) -> Iterator[list[int]]:
    """Asserts after the test that the audit log only grew: earlier rows unchanged."""
    before = audit_rows(db)
    added: list[int] = []
    yield added
    after = audit_rows(db)
    assert after[: len(before)] == before
    assert len(after) - len(before) == sum(added)


def test_assign_and_comment_keep_state_and_are_audited(
    capsys: pytest.CaptureFixture[str], db: Path, grows: list[int]
) -> None:
    out = cli(capsys, db, "assign", "2", "--to", "carol", "--actor", "alice")
    assert out.code == 0
    assert (
        out.stdout
        == "break 2: assign (pending_timing -> pending_timing) by alice: assignee - -> carol\n"
    )
    out = cli(capsys, db, "comment", "2", "--text", "=HYPERLINK(x)", "--actor", "carol")
    assert out.code == 0
    grows.append(2)
    assert query(db, "SELECT state, assignee FROM break_items WHERE break_id = 2") == [
        ("pending_timing", "carol")
    ]
    assert query(db, "SELECT actor, body FROM break_comments") == [("carol", "=HYPERLINK(x)")]
    assert query(
        db, "SELECT actor, break_id, action, from_state, to_state, note FROM audit_log"
    ) == [
        ("alice", 2, "assign", "pending_timing", "pending_timing", "assignee - -> carol"),
        ("carol", 2, "comment", "pending_timing", "pending_timing", "=HYPERLINK(x)"),
    ]


def test_resolve_write_off_reopen(
    capsys: pytest.CaptureFixture[str], db: Path, grows: list[int]
) -> None:
    assert cli(capsys, db, "resolve", "1", "--reason", "booked late", "--actor", "a").code == 0
    assert state_of(db, 1) == "resolved"
    assert query(db, "SELECT resolution FROM break_items WHERE break_id = 1") == [("booked late",)]
    assert (
        cli(capsys, db, "write-off", "2", "--reason", "below threshold", "--actor", "a").code == 0
    )
    assert state_of(db, 2) == "written_off"
    assert cli(capsys, db, "reopen", "1", "--reason", "wrong call", "--actor", "b").code == 0
    assert state_of(db, 1) == "open"
    assert query(db, "SELECT resolution FROM break_items WHERE break_id = 1") == [(None,)]
    assert cli(capsys, db, "reopen", "2", "--reason", "audit query", "--actor", "b").code == 0
    assert state_of(db, 2) == "open"  # reopened breaks are a person's, whatever they were before
    grows.append(4)
    assert [(e.action, e.from_state, e.to_state, e.note) for e in _history(db, 1)] == [
        ("resolve", "open", "resolved", "booked late"),
        ("reopen", "resolved", "open", "wrong call"),
    ]


def _history(db: Path, break_id: int) -> list[Any]:
    with duckdb.connect(str(db), read_only=True) as con:
        return list(audit_history(con, break_id))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("resolve", "4", "--reason", "x"), "break 4 is already resolved; reopen it first"),
        (("write-off", "4", "--reason", "x"), "break 4 is already resolved; reopen it first"),
        (("reopen", "1", "--reason", "x"), "break 1 is open: only resolved or written_off"),
        (("resolve", "1", "--reason", "   "), "resolve needs a reason"),
        (("write-off", "1", "--reason", ""), "write_off needs a reason"),
        (("comment", "1", "--text", " "), "comment needs a text"),
        (("assign", "1", "--to", ""), "assign needs an assignee"),
        (("resolve", "77", "--reason", "x"), "no break 77"),
        (("resolve", "1"), "the following arguments are required: --reason"),
        (("reopen", "4"), "the following arguments are required: --reason"),
        (("resolve", "x", "--reason", "y"), "invalid int value"),
    ],
)
def test_refused_actions_exit_2_in_one_line_and_change_nothing(
    capsys: pytest.CaptureFixture[str],
    db: Path,
    grows: list[int],
    argv: tuple[str, ...],
    message: str,
) -> None:
    before = query(db, "SELECT * EXCLUDE (updated_at) FROM break_items ORDER BY break_id")
    line = one_line_error(cli(capsys, db, *argv, "--actor", "a"))
    assert message in line
    assert query(db, "SELECT * EXCLUDE (updated_at) FROM break_items ORDER BY break_id") == before
    assert query(db, "SELECT count(*) FROM break_comments") == [(0,)]


def test_actor_defaults_to_env(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECON_ACTOR", "finance-bot")
    assert cli(capsys, db, "assign", "1", "--to", "bob").code == 0
    monkeypatch.delenv("RECON_ACTOR")
    monkeypatch.setattr("getpass.getuser", lambda: "osuser")
    assert cli(capsys, db, "comment", "1", "--text", "hi").code == 0
    assert query(db, "SELECT actor FROM audit_log ORDER BY seq") == [("finance-bot",), ("osuser",)]


def test_missing_store_is_an_error_not_a_new_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "nope.duckdb"
    assert "no store" in one_line_error(cli(capsys, db, "list"))
    assert not db.exists()


# --- invariant: any sequence of valid actions --------------------------------------------------


def _valid(state: str) -> list[str]:
    return [a for a in ACTIONS if problem(1, state, Request(1, a, "why", "who")) is None]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), start=st.sampled_from(["open", "pending_timing", "resolved", "written_off"]))
def test_any_valid_sequence_logs_each_action_once(data: st.DataObject, start: str) -> None:
    with duckdb.connect(":memory:") as con:
        con.execute("SET TimeZone = 'UTC'")
        migrate(con)
        bid = add_break(con, BreakRow(state=start))
        state, done = start, []
        for _ in range(data.draw(st.integers(0, 8))):
            action = data.draw(st.sampled_from(_valid(state)))
            applied = act(con, Request(bid, action, "why", "who"), "actor")
            assert applied.from_state == state
            state = ACTIONS[action] or state
            done.append(action)
        history = audit_history(con, bid)
        assert [e.action for e in history] == done
        row = con.execute("SELECT state FROM break_items WHERE break_id = ?", [bid]).fetchone()
        assert row == (state,)
        # the log is a chain: each change starts where the previous one ended
        ends = [start] + [e.to_state for e in history]
        assert [e.from_state for e in history] == ends[:-1]
        if done and ACTIONS[done[-1]] is not None:
            assert state == ACTIONS[done[-1]]
        for action in ("resolve", "write_off"):
            if state in CLOSED_STATES:
                with pytest.raises(BreakError):
                    act(con, Request(bid, action, "again", ""), "actor")
        assert len(audit_history(con, bid)) == len(done)


def test_show_reads_a_parquet_ledger_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.parquet"
    pl.DataFrame(
        {"merchant_order_id": ["O9", "00012345"], "amount": ["1.00", "10.00"]}
    ).write_parquet(ledger)
    db = tmp_path / "s.duckdb"
    make_store(db, [BreakRow(ledger_file=str(ledger), ledger_row=2)])
    lines = cli(capsys, db, "show", "1").stdout.splitlines()
    assert (
        lines[lines.index("raw ledger row 2:") + 1] == "  merchant_order_id=00012345, amount=10.00"
    )


def test_terminal_never_gets_control_characters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "s.duckdb"
    bill = tmp_path / "bill.csv"
    bill.write_bytes(b"h\nid\t,\x1b[2J,\xe2\x80\xae\n")
    make_store(db, [BreakRow(merchant_order_id="A\x1b[31mB", bill_file=str(bill), bill_line=2)])
    listed_out = cli(capsys, db, "list").stdout
    assert "A\\x1b[31mB" in listed_out
    assert "\x1b" not in listed_out
    shown = cli(capsys, db, "show", "1").stdout
    assert "  id\\t,\\x1b[2J,\\u202e" in shown.splitlines()
    assert "\x1b" not in shown


def test_auto_resolved_belongs_to_the_nightly_run() -> None:
    closed = Request(1, "resolve", "x")
    assert problem(1, "auto_resolved", closed) == "break 1 is already auto_resolved"
    assert problem(1, "written_off", closed) == "break 1 is already written_off; reopen it first"
    assert problem(1, "auto_resolved", Request(1, "reopen", "x")) == (
        "break 1 is auto_resolved: only resolved or written_off breaks can be reopened"
    )
    assert problem(1, "auto_resolved", Request(1, "comment", "still odd")) is None
