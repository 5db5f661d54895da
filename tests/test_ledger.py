"""recon.ledger.load_ledger_day: the ledger export contract of the README, CSV and Parquet."""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon import ledger
from recon.currency import CURRENCY_EXPONENTS
from recon.errors import InputError
from recon.ledger import LEDGER_COLUMNS, LEDGER_ROW_SCHEMA, LedgerDay, load_ledger_day
from recon.schema import QUARANTINE_SCHEMA

SH = "Asia/Shanghai"
D1 = dt.date(2024, 3, 1)
D2 = dt.date(2024, 3, 2)
UTC = dt.UTC


def row(
    order: str,
    *,
    refund: str = "",
    txn_type: str = "payment",
    channel: str = "wechatpay",
    txn_id: str = "",
    amount: str = "1.00",
    currency: str = "CNY",
    status: str = "SUCCESS",
    created_at: str = "2024-03-01T12:00:00+08:00",
) -> dict[str, str]:
    return {
        "merchant_order_id": order,
        "merchant_refund_id": refund,
        "txn_type": txn_type,
        "channel": channel,
        "channel_txn_id": txn_id,
        "amount": amount,
        "currency": currency,
        "status": status,
        "created_at": created_at,
    }


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    fields = header or list(LEDGER_COLUMNS)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, str]]) -> Path:
    pl.DataFrame(rows, schema=dict.fromkeys(LEDGER_COLUMNS, pl.String)).write_parquet(path)
    return path


def write(tmp_path: Path, rows: list[dict[str, str]], kind: str) -> Path:
    if kind == "csv":
        return write_csv(tmp_path / "ledger.csv", rows)
    return write_parquet(tmp_path / "ledger.parquet", rows)


def load(path: Path, day: dt.date = D1, channel: str = "wechatpay", tz: str = SH) -> LedgerDay:
    ld = load_ledger_day(path, channel, tz, day, path.parent / "work")
    assert ld.rows_files, "a load always leaves at least one part"
    for part in ld.rows_files:
        assert part.is_file()
        assert pl.read_parquet_schema(part) == LEDGER_ROW_SCHEMA
    return ld


def day_rows(ld: LedgerDay) -> pl.DataFrame:
    got = ld.rows.collect()
    assert got.height == ld.n_rows
    return got


def orders(ld: LedgerDay) -> list[str]:
    return day_rows(ld)["merchant_order_id"].to_list()


def quarantined(ld: LedgerDay) -> list[tuple[int, str, str]]:
    return [
        (int(line), str(col), str(why))
        for line, col, why in ld.quarantine.select("source_line", "column", "reason").iter_rows()
    ]


def assert_conserved(ld: LedgerDay) -> None:
    n_rows = day_rows(ld).height
    assert ld.rows_read == n_rows + ld.quarantine.height + ld.rows_other
    assert ld.rows_channel_day == n_rows + ld.quarantine.height
    assert ld.quarantine.schema == QUARANTINE_SCHEMA
    assert ld.quarantine["source_line"].is_sorted()


# --- the business day ------------------------------------------------------------------

# created_at as written -> (business day in Shanghai, the instant in UTC)
INSTANTS: list[tuple[str, dt.date, dt.datetime]] = [
    ("2024-03-01T16:30:00Z", D2, dt.datetime(2024, 3, 1, 16, 30, tzinfo=UTC)),
    ("2024-03-01T15:59:59Z", D1, dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC)),
    ("2024-03-01T16:00:00z", D2, dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)),
    ("2024-03-01T23:59:59+08:00", D1, dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC)),
    ("2024-03-02T00:00:00+08:00", D2, dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)),
    ("2024-03-01T23:59:59+0800", D1, dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC)),
    ("2024-03-02T00:00:00+08", D2, dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)),
    ("2024-03-01T10:59:59-05:00", D1, dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC)),
    ("2024-03-01T11:00:00-05:00", D2, dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)),
    ("2024-03-01T11:00:00-0500", D2, dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)),
    ("2024-02-29T11:00:00-05", D1, dt.datetime(2024, 2, 29, 16, 0, tzinfo=UTC)),
    ("2024-03-01 16:30:00Z", D2, dt.datetime(2024, 3, 1, 16, 30, tzinfo=UTC)),
    ("2024-03-01 23:59:59+08:00", D1, dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC)),
    ("2024-03-01T15:59:59.999999Z", D1, dt.datetime(2024, 3, 1, 15, 59, 59, 999999, tzinfo=UTC)),
    ("2024-03-01T16:00:00.5+00:00", D2, dt.datetime(2024, 3, 1, 16, 0, 0, 500000, tzinfo=UTC)),
    ("2024-03-02T12:00:00.123+08:00", D2, dt.datetime(2024, 3, 2, 4, 0, 0, 123000, tzinfo=UTC)),
    ("2024-03-01T16:30Z", D2, dt.datetime(2024, 3, 1, 16, 30, tzinfo=UTC)),
    ("  2024-03-01T12:00:00+08:00  ", D1, dt.datetime(2024, 3, 1, 4, 0, tzinfo=UTC)),
    ("2024-03-02T05:59:59+14:00", D1, dt.datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC)),
    ("2024-03-01T02:00:00+05:30", D1, dt.datetime(2024, 2, 29, 20, 30, tzinfo=UTC)),
]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_each_row_lands_on_its_business_day_in_shanghai(tmp_path: Path, kind: str) -> None:
    rows = [row(f"O{i}", created_at=text) for i, (text, _, _) in enumerate(INSTANTS)]
    path = write(tmp_path, rows, kind)
    days = {D1: load(path, D1), D2: load(path, D2)}
    for i, (text, day, instant) in enumerate(INSTANTS):
        ld, other = days[day], days[D2 if day == D1 else D1]
        got = day_rows(ld).filter(pl.col("merchant_order_id") == f"O{i}")
        assert got.height == 1, f"{text!r} should be on {day}"
        assert got["created_at"].item() == instant, text
        assert f"O{i}" not in orders(other), text
    for ld in days.values():
        assert ld.quarantine.height == 0
        assert_conserved(ld)
    assert days[D1].n_rows + days[D2].n_rows == len(INSTANTS)


def test_the_channel_time_zone_decides_the_day(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [row("A", created_at="2024-03-01T16:30:00Z")])
    assert orders(load(path, D2, tz=SH)) == ["A"]
    assert orders(load(path, D1, tz=SH)) == []
    assert orders(load(path, D1, tz="America/New_York")) == ["A"]
    assert orders(load(path, D1, tz="UTC")) == ["A"]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_one_file_two_channels_and_neighbouring_days(tmp_path: Path, kind: str) -> None:
    rows = [
        row("W-prev", created_at="2024-02-29T23:59:59+08:00"),
        row("W-1", created_at="2024-03-01T00:00:00+08:00"),
        row("A-1", channel="alipay", created_at="2024-03-01T12:00:00+08:00"),
        row("W-2", created_at="2024-03-01T15:59:59Z"),
        row("W-next", created_at="2024-03-01T16:00:00Z"),
        row("A-next", channel="alipay", created_at="2024-03-02T12:00:00+08:00"),
        row("X-1", channel="unionpay", created_at="2024-03-01T12:00:00+08:00"),
        row("W-3", channel=" WeChatPay ", created_at="2024-03-01T10:00:00-05:00"),
    ]
    path = write(tmp_path, rows, kind)
    wx = load(path, D1)
    assert orders(wx) == ["W-1", "W-2", "W-3"]
    assert (wx.rows_read, wx.rows_other, wx.quarantine.height) == (8, 5, 0)
    assert_conserved(wx)
    ali = load(path, D1, channel="alipay")
    assert orders(ali) == ["A-1"]
    assert (ali.rows_read, ali.rows_other) == (8, 7)
    assert_conserved(ali)
    assert orders(load(path, D2, channel="alipay")) == ["A-next"]
    assert orders(load(path, dt.date(2024, 2, 29))) == ["W-prev"]


def test_rows_carry_their_lineage(tmp_path: Path) -> None:
    rows = [
        row("other", channel="alipay"),
        row("A"),
        row("B", created_at="2024-03-05T12:00:00+08:00"),
        row("C"),
    ]
    path = write_csv(tmp_path / "l.csv", rows)
    ld = load(path)
    assert day_rows(ld).select("merchant_order_id", "origin_file", "origin_line").rows() == [
        ("A", str(path), 2),  # data row 2 (header excluded)
        ("C", str(path), 4),
    ]
    assert ld.path == path


# --- created_at without an offset -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-01T12:00:00",
        "2024-03-01 12:00:00",
        "2024-03-01T12:00:00.123",
        "2024-03-01",
        "",
        "not a time",
        "2024-03-01T25:00:00+08:00",
        "2024-02-30T12:00:00+08:00",
        "01/03/2024 12:00:00 +08:00",
    ],
)
def test_created_at_without_offset_or_invalid_is_quarantined_with_line_and_column(
    tmp_path: Path, text: str
) -> None:
    rows = [row("A"), row("B"), row("naive", created_at=text), row("D")]
    path = write_csv(tmp_path / "l.csv", rows)
    ld = load(path)
    assert orders(ld) == ["A", "B", "D"]
    [(line, column, reason)] = quarantined(ld)
    assert (line, column) == (4, "created_at")  # header is line 1, data row 3 is line 4
    assert "UTC offset" in reason
    assert repr(text.strip()) in reason or text.strip() in reason
    assert ld.quarantine["source_file"].to_list() == [str(path)]
    assert_conserved(ld)


def test_naive_created_at_in_parquet_names_the_data_row(tmp_path: Path) -> None:
    rows = [row("A"), row("naive", created_at="2024-03-01T12:00:00")]
    ld = load(write_parquet(tmp_path / "l.parquet", rows))
    assert quarantined(ld) == [
        (2, "created_at", "created_at '2024-03-01T12:00:00' is not ISO 8601 with a UTC offset")
    ]


def test_naive_created_at_of_another_channel_is_not_ours(tmp_path: Path) -> None:
    rows = [row("A"), row("ali", channel="alipay", created_at="2024-03-01T12:00:00")]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    assert orders(ld) == ["A"]
    assert ld.quarantine.height == 0
    assert ld.rows_other == 1


# --- text stays text ----------------------------------------------------------------------

IDS = ["00012345", "123E4", "123456789012345678", "4200000000000000000000000001", "1.50", "0"]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_ids_stay_exactly_as_written(tmp_path: Path, kind: str) -> None:
    rows = [row(i, txn_id=i) for i in IDS]
    rows += [row(i, refund="0" + i, txn_type="refund", txn_id=i) for i in IDS]
    ld = load(write(tmp_path, rows, kind))
    assert ld.quarantine.height == 0
    got = day_rows(ld).select("merchant_order_id", "merchant_refund_id", "channel_txn_id").rows()
    assert got == [(i, "", i) for i in IDS] + [(i, "0" + i, i) for i in IDS]
    assert day_rows(ld).schema["merchant_order_id"] == pl.String


def test_ids_are_stripped_and_missing_values_are_empty(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    header = ",".join(LEDGER_COLUMNS)
    path.write_text(
        header + "\n" + " 00012345 ,,payment,wechatpay,,1.00,CNY,SUCCESS,2024-03-01T12:00:00Z\n",
        encoding="utf-8",
    )
    ld = load(path)
    assert day_rows(ld).select(
        "merchant_order_id", "merchant_refund_id", "channel_txn_id"
    ).rows() == [("00012345", "", "")]


def test_codes_are_case_insensitive(tmp_path: Path) -> None:
    rows = [
        row("A", channel="WeChatPay", txn_type="PAYMENT", currency="cny", status="success"),
        row(
            "B",
            channel="WECHATPAY",
            txn_type="Refund",
            refund="R1",
            currency=" Cny ",
            status="Closed",
        ),
    ]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    assert day_rows(ld).select("merchant_order_id", "txn_type", "currency", "status").rows() == [
        ("A", "payment", "CNY", "SUCCESS"),
        ("B", "refund", "CNY", "CLOSED"),
    ]


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_amount_spellings_are_read_exactly(tmp_path: Path, kind: str) -> None:
    cases = [
        ("12.5", "CNY", 1250, 2),
        ("12.50", "CNY", 1250, 2),
        ("012.50", "CNY", 1250, 2),
        ("1,234.50", "CNY", 123450, 2),
        (" 7 ", "CNY", 700, 2),
        ("0.01", "CNY", 1, 2),
        ("1,234", "JPY", 1234, 0),
        ("12.505", "BHD", 12505, 3),
        ("12.5", "bhd", 12500, 3),
    ]
    rows = [row(f"O{i}", amount=a, currency=c) for i, (a, c, _, _) in enumerate(cases)]
    ld = load(write(tmp_path, rows, kind))
    assert ld.quarantine.height == 0
    assert day_rows(ld).select("amount_minor", "exponent").rows() == [
        (m, e) for _, _, m, e in cases
    ]
    assert day_rows(ld).schema["amount_minor"] == pl.Int64


@pytest.mark.parametrize(
    ("amount", "currency", "column", "reason"),
    [
        ("-1.00", "CNY", "amount", "amount '-1.00' must be positive"),
        ("-0.01", "CNY", "amount", "amount '-0.01' must be positive"),
        ("12.505", "CNY", "amount", "amount '12.505' is not an exact CNY amount"),
        ("12.5", "JPY", "amount", "amount '12.5' is not an exact JPY amount"),
        ("1e1", "CNY", "amount", "amount '1e1' is not an exact CNY amount"),
        ("", "CNY", "amount", "amount '' is not an exact CNY amount"),
        ("12,50", "CNY", "amount", "amount '12,50' is not an exact CNY amount"),
        ("1.00", "RMB", "currency", "unknown currency 'RMB'"),
        ("1.00", "", "currency", "unknown currency ''"),
    ],
)
def test_bad_amounts_are_quarantined_with_the_reason(
    tmp_path: Path, amount: str, currency: str, column: str, reason: str
) -> None:
    rows = [row("A"), row("bad", amount=amount, currency=currency)]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    assert orders(ld) == ["A"]
    assert quarantined(ld) == [(3, column, reason)]
    assert_conserved(ld)


@pytest.mark.parametrize(
    ("fields", "column", "reason"),
    [
        ({"txn_type": "refund"}, "merchant_refund_id", "refund without merchant_refund_id"),
        (
            {"txn_type": "REFUND", "refund": "  "},
            "merchant_refund_id",
            "refund without merchant_refund_id",
        ),
        ({"order": ""}, "merchant_order_id", "merchant_order_id is empty"),
        ({"txn_type": "chargeback"}, "txn_type", "txn_type 'chargeback' is not payment or refund"),
        ({"txn_type": ""}, "txn_type", "txn_type '' is not payment or refund"),
        ({"status": ""}, "status", "status is empty"),
    ],
)
def test_incomplete_rows_are_quarantined_with_the_reason(
    tmp_path: Path, fields: dict[str, str], column: str, reason: str
) -> None:
    bad = row(
        fields.get("order", "bad"),
        refund=fields.get("refund", ""),
        txn_type=fields.get("txn_type", "payment"),
        status=fields.get("status", "SUCCESS"),
    )
    ld = load(write_csv(tmp_path / "l.csv", [bad, row("A")]))
    assert orders(ld) == ["A"]
    assert quarantined(ld) == [(2, column, reason)]
    assert_conserved(ld)


def test_first_failing_check_names_the_row(tmp_path: Path) -> None:
    both = row("", amount="-1", currency="XXX", status="")
    ld = load(write_csv(tmp_path / "l.csv", [both]))
    assert quarantined(ld) == [(2, "merchant_order_id", "merchant_order_id is empty")]


def test_bad_rows_of_other_days_are_not_quarantined_today(tmp_path: Path) -> None:
    rows = [row("A"), row("next", amount="-1", created_at="2024-03-02T12:00:00+08:00")]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    assert orders(ld) == ["A"]
    assert ld.quarantine.height == 0
    assert ld.rows_other == 1
    assert quarantined(load(write_csv(tmp_path / "l.csv", rows), D2)) == [
        (3, "amount", "amount '-1' must be positive")
    ]


def test_full_width_digits_in_an_amount_quarantine_the_row(tmp_path: Path) -> None:
    rows = [row("A"), row("wide", amount="１２.50")]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    assert orders(ld) == ["A"]
    assert [(line, column) for line, column, _ in quarantined(ld)] == [(3, "amount")]


# --- the file itself -------------------------------------------------------------------------


@pytest.mark.parametrize("missing", LEDGER_COLUMNS)
def test_header_without_a_column_is_an_input_error_naming_it(tmp_path: Path, missing: str) -> None:
    header = [c for c in LEDGER_COLUMNS if c != missing]
    path = write_csv(tmp_path / "l.csv", [row("A")], header=header)
    with pytest.raises(InputError) as info:
        load(path)
    assert info.value.column == missing
    assert info.value.line == 1
    assert missing in str(info.value)
    assert str(path) in str(info.value)


def test_parquet_without_a_column_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "l.parquet"
    pl.DataFrame([row("A")]).drop("created_at").write_parquet(path)
    with pytest.raises(InputError, match="created_at"):
        load(path)


def test_header_names_are_case_and_blank_insensitive_and_extra_columns_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.csv"
    header = ",".join(f" {c.upper()} " for c in LEDGER_COLUMNS) + ",note"
    path.write_text(
        "\ufeff" + header + "\nA,,payment,wechatpay,T1,1.00,CNY,SUCCESS,2024-03-01T12:00:00Z,x\n",
        encoding="utf-8",
    )
    ld = load(path)
    assert orders(ld) == ["A"]


def test_header_with_a_column_twice_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text(
        ",".join(LEDGER_COLUMNS) + ",Amount\nA,,payment,wechatpay,,1.00,CNY,SUCCESS,"
        "2024-03-01T12:00:00Z,2.00\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="amount"):
        load(path)


@pytest.mark.parametrize("name", ["nope.csv", "nope.parquet"])
def test_missing_file_is_an_input_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(InputError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "no such file" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x01\x02\xff\xfe",
        b"merchant_order_id,amount\nA,1,2,3,4\n",
    ],
)
def test_unreadable_csv_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_not_parquet_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is no parquet file")
    with pytest.raises(InputError, match="cannot read ledger"):
        load(path)


def test_header_only_is_an_empty_day(tmp_path: Path) -> None:
    ld = load(write_csv(tmp_path / "l.csv", []))
    assert (ld.rows_read, ld.n_rows, ld.quarantine.height, ld.rows_other) == (0, 0, 0, 0)
    assert day_rows(ld).schema == LEDGER_ROW_SCHEMA


def test_parquet_timestamps_and_numbers_are_read_as_their_text(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    pl.DataFrame(
        {
            "merchant_order_id": [123456789012345678],
            "merchant_refund_id": [None],
            "txn_type": ["payment"],
            "channel": ["wechatpay"],
            "channel_txn_id": ["T1"],
            "amount": ["12.50"],
            "currency": ["CNY"],
            "status": ["SUCCESS"],
            "created_at": [dt.datetime(2024, 3, 1, 16, 30, tzinfo=UTC)],
        },
        schema_overrides={"merchant_refund_id": pl.String},
    ).write_parquet(path)
    ld = load(path, D2)
    assert day_rows(ld).select(
        "merchant_order_id", "merchant_refund_id", "amount_minor"
    ).rows() == [("123456789012345678", "", 1250)]
    assert day_rows(ld)["created_at"].item() == dt.datetime(2024, 3, 1, 16, 30, tzinfo=UTC)


# --- conservation ------------------------------------------------------------------------------

ledger_rows = st.lists(
    st.builds(
        lambda ch, amount, when, kind: row(
            "O",
            channel=ch,
            amount=amount,
            created_at=when,
            txn_type=kind,
            refund="R" if kind == "refund" else "",
        ),
        st.sampled_from(["wechatpay", "alipay", "WECHATPAY", ""]),
        st.sampled_from(["1.00", "012.5", "1,234.50", "-1", "1.005", "x", ""]),
        st.sampled_from(
            [
                "2024-03-01T12:00:00+08:00",
                "2024-03-01T16:00:00Z",
                "2024-02-29T16:00:00Z",
                "2024-03-01T10:59:59-05:00",
                "2024-03-01T12:00:00",
                "",
            ]
        ),
        st.sampled_from(["payment", "refund", "other"]),
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=ledger_rows, day=st.sampled_from([D1, D2]))
def test_every_row_read_is_kept_quarantined_or_other(
    tmp_path: Path, rows: list[dict[str, str]], day: dt.date
) -> None:
    ld = load(write_csv(tmp_path / "l.csv", rows), day)
    assert ld.rows_read == len(rows)
    assert_conserved(ld)
    lines = ld.quarantine["source_line"].to_list() + [r + 1 for r in day_rows(ld)["origin_line"]]
    assert len(set(lines)) == len(lines)  # no row counted twice


# --- batches and parts ----------------------------------------------------------------------


def batch_rows_of_every_kind() -> list[dict[str, str]]:
    """Rows that keep, quarantine or skip, with quoted commas, quotes and line breaks."""
    out: list[dict[str, str]] = []
    for i in range(60):
        kind = i % 6
        if kind == 0:
            out.append(row(f"O{i}", txn_id=f'T,"{i}"'))
        elif kind == 1:
            out.append(row(f"multi\nline {i}", amount="1,234.50"))
        elif kind == 2:
            out.append(row(f"A{i}", channel="alipay"))
        elif kind == 3:
            out.append(row(f"N{i}", created_at="2024-03-02T12:00:00+08:00"))
        elif kind == 4:
            out.append(row(f"Q{i}", amount="-1"))
        else:
            out.append(row(f"U{i}", created_at="2024-03-01T12:00:00"))
    return out


def same_day(a: LedgerDay, b: LedgerDay) -> None:
    assert day_rows(a).equals(day_rows(b))
    assert a.quarantine.equals(b.quarantine)
    assert (a.n_rows, a.rows_read, a.rows_other) == (b.n_rows, b.rows_read, b.rows_other)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_small_batches_and_parts_load_the_same_day(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, batch_rows_of_every_kind(), kind)
    whole = load(path)
    assert (whole.n_rows, whole.quarantine.height, whole.rows_read) == (20, 20, 60)
    assert len(whole.rows_files) == 1
    # Blocks of 16 bytes are shorter than every record; parts of 3 rows split the day.
    small = load_ledger_day(
        path, "wechatpay", SH, D1, tmp_path / "small", block_bytes=16, batch_rows=4, part_rows=3
    )
    sizes = [pl.read_parquet(f).height for f in small.rows_files]
    assert len(sizes) >= 5
    assert sum(sizes) == 20
    assert all(n >= 3 for n in sizes[:-1])
    same_day(small, whole)
    lines = day_rows(small)["origin_line"].to_list()
    assert lines == sorted(lines)  # file order across parts
    assert orders(small)[1:4] == ["multi\nline 1", "O6", "multi\nline 7"]
    assert_conserved(small)


@settings(max_examples=25, deadline=None)
@given(
    rows=ledger_rows,
    block=st.integers(min_value=1, max_value=400),
    part=st.integers(min_value=1, max_value=7),
)
def test_any_block_size_loads_the_same_day(
    rows: list[dict[str, str]], block: int, part: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "l.csv", rows)
        whole = load_ledger_day(path, "wechatpay", SH, D1, Path(tmp) / "whole")
        small = load_ledger_day(
            path, "wechatpay", SH, D1, Path(tmp) / "small", block_bytes=block, part_rows=part
        )
        same_day(small, whole)


def test_crlf_lines_and_blank_lines_count_as_the_whole_file_would(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    lines = [",".join(LEDGER_COLUMNS)] + [
        f"O{i},,payment,wechatpay,T{i},1.00,CNY,SUCCESS,2024-03-01T12:00:00+08:00" for i in range(5)
    ]
    lines.insert(3, "")  # a blank line is a row of nothing: another channel's
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    whole = load(path)
    assert orders(whole) == [f"O{i}" for i in range(5)]
    assert (whole.rows_read, whole.rows_other) == (6, 1)
    assert day_rows(whole)["origin_line"].to_list() == [1, 2, 4, 5, 6]
    small = load_ledger_day(path, "wechatpay", SH, D1, tmp_path / "small", block_bytes=8)
    same_day(small, whole)


def test_a_bad_row_in_a_later_batch_leaves_no_parts_behind(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [row(f"O{i}") for i in range(50)])
    with path.open("a", encoding="utf-8") as f:
        f.write("X,,payment,wechatpay,,1.00,CNY,SUCCESS,2024-03-01T12:00:00Z,extra\n")
    work = tmp_path / "work"
    with pytest.raises(InputError) as info:
        load_ledger_day(path, "wechatpay", SH, D1, work, block_bytes=256, part_rows=5)
    assert str(path) in str(info.value)
    assert "cannot read ledger" in str(info.value)
    assert list(work.rglob("*")) == []


def test_a_quote_that_never_closes_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "_MAX_RECORD_BYTES", 1024)
    path = write_csv(tmp_path / "l.csv", [row("A"), row("B")])
    with path.open("a", encoding="utf-8") as f:
        f.write('"C,,payment,wechatpay,,1.00,CNY,SUCCESS,2024-03-01T12:00:00Z\n')
        f.write("D,,payment,wechatpay,,1.00,CNY,SUCCESS,2024-03-01T12:00:00Z\n" * 40)
    with pytest.raises(InputError) as info:
        load_ledger_day(path, "wechatpay", SH, D1, tmp_path / "work", block_bytes=64)
    assert info.value.line == 4  # the first record not read: data row 3
    assert "quote" in str(info.value)
    assert list((tmp_path / "work").rglob("*")) == []


# --- fast paths against their references -----------------------------------------------------

_digits = st.text("0123456789", min_size=2, max_size=2)
created_at_texts = st.one_of(
    st.builds(
        lambda y, mo, d, sep, h, mi, s, frac, off: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}",
        st.sampled_from(["2024", "2023", "1970", "0000", "9999", "２０２４"]),
        st.sampled_from(["01", "02", "03", "12", "13", "00"]) | _digits,
        st.sampled_from(["01", "28", "29", "30", "31", "00"]) | _digits,
        st.sampled_from(["T", " ", "t", "X"]),
        st.sampled_from(["00", "12", "23", "24", "１2"]) | _digits,
        st.sampled_from(["00", "59", "60"]) | _digits,
        st.sampled_from(["00", "59", "60"]) | _digits,
        st.sampled_from(["", "", ".5", ".123456", ".123456789", "."]),
        st.sampled_from(["Z", "z", "", "+08", "+0800", "-05:30", "+23:59", "+24:00", "+08:60"])
        | st.builds(lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), _digits, _digits),
    ),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(created_at_texts, min_size=1, max_size=40))
def test_created_at_fast_path_equals_the_reference(texts: list[str]) -> None:
    from recon.ledger_time import _reference_utc, created_at_utc

    # Two chunks, as read_csv gives them.
    half = len(texts) // 2
    text = pl.concat(
        [pl.Series("v", texts[:half], pl.String), pl.Series("v", texts[half:], pl.String)],
        rechunk=False,
    )
    reference = text.to_frame().select(_reference_utc(pl.col("v"))).to_series()
    got = created_at_utc(text)
    assert got.dtype == reference.dtype == pl.Datetime("us", "UTC")
    # As integers: year 0 has no Python datetime.
    assert got.cast(pl.Int64).to_list() == reference.cast(pl.Int64).to_list(), texts


@pytest.mark.parametrize("n_values", [1, 3, 8, 9, 30])
def test_few_values_helpers_work_per_value_whatever_their_number(n_values: int) -> None:
    from recon.few_values import distinct, lookup, tidied

    values = [f" v{i} " if i % 2 else f"V{i}" for i in range(n_values)] + [None]
    column = pl.Series("c", [values[i % len(values)] for i in range(200)], pl.String)
    assert sorted(distinct(column).to_list(), key=str) == sorted(values, key=str)
    table = {v: i for i, v in enumerate(values) if v is not None and i % 3}
    assert lookup(column, table, pl.Int64()).to_list() == [
        table.get(v) if v is not None else None for v in column
    ]
    assert tidied(column, upper=False).to_list() == [(v or "").strip().lower() for v in column]
    assert tidied(column, upper=True).to_list() == [(v or "").strip().upper() for v in column]


def test_many_channels_and_currencies_in_one_batch(tmp_path: Path) -> None:
    currencies = ["CNY", "jpy", " BHD", "USD", "EUR", "KRW", "KWD", "GBP", "HKD", "XXX", "SGD"]
    rows = [
        row(f"O{i}", channel=f"chan{i % 12}" if i % 3 else " WeChatPay", currency=c, amount="7")
        for i, c in enumerate(currencies * 3)
    ]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    got = day_rows(ld).select("currency", "amount_minor", "exponent").rows()
    want = [
        (c.strip().upper(), 7 * 10 ** CURRENCY_EXPONENTS[c.strip().upper()], None)
        for i, c in enumerate(currencies * 3)
        if i % 3 == 0 and c != "XXX"
    ]
    assert got == [(c, m, CURRENCY_EXPONENTS[c]) for c, m, _ in want]
    assert [(col, why) for _, col, why in quarantined(ld)] == [
        ("currency", "unknown currency 'XXX'")
    ]
    assert_conserved(ld)


def test_a_batch_without_one_valid_time_or_row_of_the_channel(tmp_path: Path) -> None:
    rows = [row(f"O{i}", created_at=t) for i, t in enumerate(["", "x", "2024-03-01T12:00:00"])]
    ld = load(write_csv(tmp_path / "l.csv", rows))
    assert orders(ld) == []
    assert [(line, col) for line, col, _ in quarantined(ld)] == [
        (i + 2, "created_at") for i in range(3)
    ]
    other = load(write_csv(tmp_path / "o.csv", [row("A", channel="alipay")] * 3))
    assert (other.n_rows, other.quarantine.height, other.rows_other) == (0, 0, 3)
