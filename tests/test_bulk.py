"""recon breaks export / import: the spreadsheet round trip, all-or-nothing imports."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook  # type: ignore[import-untyped]

from recon.bulk import EDIT_COLUMNS, EXPORT_COLUMNS, ImportRejected, import_sheet, read_sheet
from recon.store import open_store
from tests.test_analyst import EVIL, BreakRow, audit_rows, cli, make_store, one_line_error, query

LONG_ID = "420000123456789012"  # 18 digits: Excel would show 4.20000123456789E+17

ROWS = [
    BreakRow(merchant_order_id="00012345", amount_minor=10000),
    BreakRow(merchant_order_id=LONG_ID, kind="field_mismatch", field="amount",
             ledger_value="-5.00", channel_value="+5.00"),
    BreakRow(merchant_order_id=EVIL, reason_code="@SUM(A1)"),
    BreakRow(merchant_order_id="O4", state="resolved"),
    BreakRow(merchant_order_id="O5", merchant_refund_id="R5", txn_type="refund"),
    BreakRow(merchant_order_id="O6", channel="alipay"),
]  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "s.duckdb"
    assert make_store(path, ROWS) == [1, 2, 3, 4, 5, 6]
    return path


def states(db: Path) -> dict[int, str]:
    return dict(query(db, "SELECT break_id, state FROM break_items ORDER BY break_id"))


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str = "utf-8-sig") -> None:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))


def edit_xlsx(path: Path, edits: dict[int, dict[str, Any]]) -> None:
    """Set cells like an analyst in Excel would: {break_id: {column: value}}."""
    wb = load_workbook(path)
    ws = wb["breaks"]
    header = [c.value for c in ws[1]]
    for row in ws.iter_rows(min_row=2):
        for column, value in edits.get(int(row[0].value), {}).items():
            row[header.index(column)].value = value
    wb.save(path)


EDITS: dict[int, dict[str, Any]] = {
    1: {"action": "resolve", "reason": "booked on 03-02"},
    2: {"action": "write-off", "reason": "under 1 CNY"},
    3: {"action": "assign", "assignee_new": "李四"},
    5: {"action": "comment", "reason": "多行\n说明"},
}


def check_applied(db: Path, before: list[tuple[Any, ...]], name: str) -> None:
    assert states(db) == {1: "resolved", 2: "written_off", 3: "open", 4: "resolved", 5: "open", 6: "open"}  # fmt: skip
    after = audit_rows(db)
    assert after[: len(before)] == before
    assert [r[4:] for r in after[len(before) :]] == [
        ("resolve", "open", "resolved", f"booked on 03-02 [{name}:2]"),
        ("write_off", "open", "written_off", f"under 1 CNY [{name}:3]"),
        ("assign", "open", "open", f"assignee - -> 李四 [{name}:4]"),
        ("comment", "open", "open", f"多行\n说明 [{name}:5]"),
    ]
    assert query(db, "SELECT assignee FROM break_items WHERE break_id = 3") == [("李四",)]
    assert query(db, "SELECT body FROM break_comments") == [("多行\n说明",)]
    assert query(db, "SELECT resolution FROM break_items WHERE break_id = 1") == [
        ("booked on 03-02",)
    ]


# --- export ----------------------------------------------------------------------------------


def test_csv_export_is_complete_and_formula_safe(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.csv"
    got = cli(capsys, db, "export", "--out", str(out))
    assert got.code == 0
    assert got.stdout == f"5 break(s) -> {out}\n"
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # Excel reads the BOM as UTF-8
    rows = read_csv(out)
    assert tuple(rows[0]) == (*EXPORT_COLUMNS, *EDIT_COLUMNS)
    assert [r["break_id"] for r in rows] == ["1", "2", "3", "5", "6"]  # 4 is closed
    assert rows[0]["merchant_order_id"] == "00012345"
    assert rows[0]["amount"] == "100.00"
    assert rows[1]["merchant_order_id"] == LONG_ID
    assert (rows[1]["ledger_value"], rows[1]["channel_value"]) == ("-5.00", "+5.00")  # numbers
    assert rows[2]["merchant_order_id"] == "'" + EVIL
    assert rows[2]["reason_code"] == "'@SUM(A1)"
    assert rows[3]["merchant_refund_id"] == "R5"
    assert all(r[c] == "" for r in rows for c in EDIT_COLUMNS)


def test_export_filters_like_list(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.csv"
    assert cli(capsys, db, "export", "--out", str(out), "--channel", "alipay").code == 0
    assert [r["break_id"] for r in read_csv(out)] == ["6"]
    assert cli(capsys, db, "export", "--out", str(out), "--state", "resolved").code == 0
    assert [r["break_id"] for r in read_csv(out)] == ["4"]


def test_xlsx_export_keeps_ids_as_text_and_has_no_formulas(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.xlsx"
    assert cli(capsys, db, "export", "--out", str(out)).code == 0
    ws = load_workbook(out)["breaks"]
    header = [c.value for c in ws[1]]
    assert tuple(header) == (*EXPORT_COLUMNS, *EDIT_COLUMNS)
    cells = {(r[0].value, header[i]): c for r in ws.iter_rows(min_row=2) for i, c in enumerate(r)}
    for bid, order in (("1", "00012345"), ("2", LONG_ID)):
        cell = cells[(bid, "merchant_order_id")]
        assert (cell.value, cell.data_type, cell.number_format) == (order, "s", "@")
    assert cells[("3", "merchant_order_id")].value == "'" + EVIL
    assert cells[("1", "age_days")].data_type == "n"
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)


def test_export_to_an_unknown_format_is_an_error(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    line = one_line_error(cli(capsys, db, "export", "--out", str(tmp_path / "b.ods")))
    assert "export to .csv or .xlsx" in line


# --- round trips -------------------------------------------------------------------------------


def test_csv_round_trip(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.csv"
    assert cli(capsys, db, "export", "--out", str(out)).code == 0
    rows = read_csv(out)
    for r in rows:
        r.update(EDITS.get(int(r["break_id"]), {}))
    write_csv(out, rows)
    before = audit_rows(db)
    got = cli(capsys, db, "import", str(out), "--actor", "alice")
    assert got.code == 0, got.stderr
    assert got.stdout.splitlines()[0] == "break 1: resolve (open -> resolved): booked on 03-02"
    assert got.stdout.splitlines()[-1] == (
        f"{out}: applied 4 action(s) by alice, ignored 1 row(s) without an action"
    )
    check_applied(db, before, "b.csv")
    # the same file again: its resolve and write-off now meet closed breaks, so nothing happens
    after = audit_rows(db)
    again = cli(capsys, db, "import", str(out), "--actor", "alice")
    assert again.code == 2
    assert "break 1 is already resolved" in again.stderr
    assert audit_rows(db) == after


def test_xlsx_round_trip(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.xlsx"
    assert cli(capsys, db, "export", "--out", str(out)).code == 0
    edit_xlsx(out, EDITS)
    before = audit_rows(db)
    got = cli(capsys, db, "import", str(out), "--actor", "alice")
    assert got.code == 0, got.stderr
    check_applied(db, before, "b.xlsx")


def test_gbk_csv_saved_by_excel_imports(db: Path, tmp_path: Path) -> None:
    """Excel on a Chinese Windows saves CSV as GBK; the neutralised id is read back exactly."""
    path = tmp_path / "gbk.csv"
    row = {"break_id": "3", "channel": "wechatpay", "merchant_order_id": "'" + EVIL,
           "action": "resolve", "reason": "已退款", "assignee_new": ""}  # fmt: skip
    write_csv(path, [row], encoding="gbk")
    with open_store(db) as con:
        report = import_sheet(con, path, "alice")
    assert [(a.break_id, a.to_state, a.detail) for a in report.applied] == [
        (3, "resolved", "已退款")
    ]


# --- rejected imports ------------------------------------------------------------------------

BAD_CSV = (
    "break_id,channel,merchant_order_id,merchant_refund_id,action,reason,assignee_new\r\n"
    '1,wechatpay,00012345,,comment,"a reason\r\nover two lines",\r\n'  # 2-3: fine
    "2,wechatpay,4.20000123456789E+17,,resolve,ok,\r\n"  # 4: id mangled by Excel
    "99,wechatpay,X,,resolve,ok,\r\n"  # 5: unknown break
    "5,wechatpay,O5,R5,close,ok,\r\n"  # 6: unknown action
    "6,alipay,O6,,write_off,,\r\n"  # 7: no reason
    "4,wechatpay,O4,,resolve,again,\r\n"  # 8: already resolved
    "3,wechatpay,'=cmd|' /C calc'!A0,,assign,,\r\n"  # 9: no assignee
    "5,wechatpay,O5,R5,comment,dup,\r\n"  # 10: break 5 twice (with line 6)
    "1,alipay,00012345,,,,\r\n"  # 11: no action: ignored, even with a wrong channel
    "x1,wechatpay,O1,,resolve,ok,\r\n"  # 12: not a number
    "6,alipay,O6,R9,reopen,no,\r\n"  # 13: refund id changed, break open
)


def test_bad_csv_is_rejected_whole_naming_every_line(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV, encoding="utf-8")
    before_audit, before_states = audit_rows(db), states(db)
    got = cli(capsys, db, "import", str(path), "--actor", "alice")
    assert got.code == 2
    assert got.stdout == ""
    lines = got.stderr.splitlines()
    assert lines[0] == f"recon: error: {path}: 9 bad row(s), nothing applied"
    by_line = {int(x.split(":")[1]): x for x in lines[1:]}
    assert sorted(by_line) == [4, 5, 6, 7, 8, 9, 10, 12, 13]  # physical lines: 2-3 is one row
    expect = {
        4: "merchant_order_id '4.20000123456789E+17' is not break 2's '420000123456789012'",
        5: "unknown break_id 99",
        6: "unknown action 'close'",
        7: "write_off needs a reason",
        8: "break 4 is already resolved",
        9: "assign needs an assignee",
        10: "break 5 is on lines 6, 10",
        12: "break_id 'x1' is not a break number",
        13: "merchant_refund_id 'R9' is not break 6's ''",
    }
    for line, message in expect.items():
        assert message in by_line[line], by_line[line]
    assert "break 5 is on lines 6, 10" in by_line[6]
    assert "break 6 is open: only resolved or written_off" in by_line[13]
    assert audit_rows(db) == before_audit
    assert states(db) == before_states
    assert query(db, "SELECT count(*) FROM break_comments") == [(0,)]


def test_bad_xlsx_names_row_numbers(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.title = "breaks"
    ws.append(["break_id", "channel", "merchant_order_id", "action", "reason", "assignee_new"])
    ws.append([1, "wechatpay", 12345, "resolve", "ok", None])  # 2: Excel made the id a number
    ws.append([None, None, None, None, None, None])  # 3: empty
    ws.append([2, "wechatpay", LONG_ID, "resolve", "ok", None])  # 4: fine
    ws.append([3.0, "wechatpay", EVIL, "resolve", None, None])  # 5: no reason
    wb.save(path)
    before = audit_rows(db)
    with open_store(db) as con, pytest.raises(ImportRejected) as err:
        import_sheet(con, path, "alice")
    assert [(b.line, b.reasons) for b in err.value.bad] == [
        (2, ("merchant_order_id '12345' is not break 1's '00012345' "
             "(changed, or mangled by a spreadsheet? the .xlsx export keeps ids exact)",)),
        (5, ("resolve needs a reason",)),
    ]  # fmt: skip
    assert audit_rows(db) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("break_id,channel,action,reason\r\n1,wechatpay,resolve,x\r\n", "no column merchant_order_id, assignee_new"),
        ("", "empty file"),
        ("break_id,channel,merchant_order_id,action,reason,assignee_new,action\r\n", "column action appears twice"),
    ],
)  # fmt: skip
def test_unusable_file_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "f.csv"
    path.write_text(text, encoding="utf-8")
    assert message in one_line_error(cli(capsys, db, "import", str(path), "--actor", "a"))


def test_read_sheet_undoes_only_the_guard(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(
        "break_id,channel,merchant_order_id,action,reason,assignee_new\r\n"
        "1,wechatpay,'=1+1,comment,'it's fine,'-0.01\r\n",
        encoding="utf-8",
    )
    (row,) = read_sheet(path)
    assert row.line == 2
    # '=1+1 was guarded; 'it's fine and '-0.01 were not (excel_safe leaves those alone)
    assert row.cells["merchant_order_id"] == "=1+1"
    assert row.cells["reason"] == "'it's fine"
    assert row.cells["assignee_new"] == "'-0.01"
