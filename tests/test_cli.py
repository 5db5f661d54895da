"""recon.cli.main end to end: exit codes, the one-line error contract, outputs, summary.json."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from data.generate import SHANGHAI, Txn, generate, wechat_bill, write_day, write_ledger
from recon.cli import main
from recon.money import format_minor
from recon.queues import MISMATCH_COLUMNS, MISSING_COLUMNS
from recon.schema import COLUMNS

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
DAY = dt.date(2024, 3, 1)


@dataclass
class Run:
    code: int
    out: Path
    store: Path
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "summary.json").read_text(encoding="utf-8"))
        return data

    def queue(self, name: str) -> pl.DataFrame:
        return pl.read_csv(self.out / f"{name}.csv", infer_schema=False)


def run(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bill: Path,
    ledger: Path,
    *,
    channel: str = "wechatpay",
    date: str = DAY.isoformat(),
    out: str = "out",
) -> Run:
    store = tmp_path / "s.duckdb"
    argv = [
        "run", "--channel", channel, "--date", date, "--bill", str(bill),
        "--ledger", str(ledger), "--out", str(tmp_path / out), "--store", str(store),
    ]  # fmt: skip
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's way out
        code = exc.code if isinstance(exc.code, int) else -1
    captured = capsys.readouterr()
    return Run(code, tmp_path / out, store, captured.out, captured.err)


def assert_one_line_error(r: Run, *fragments: str) -> None:
    assert r.code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("recon: error: "), lines[0]
    assert "Traceback" not in r.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --- inputs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bills and a ledger that match exactly (plus other days, channels and a CLOSED order)."""
    return write_day(generate(DAY, 12, seed=5, breaks=False), DAY, tmp_path_factory.mktemp("clean"))


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), SHANGHAI)


def pay(order: str, fen: int, when: dt.datetime, n: int) -> Txn:
    return Txn("wechatpay", "payment", order, "", f"42{n:026d}", "", fen, when)


def ledger_row(t: Txn, **override: str) -> dict[str, str]:
    row = {
        "merchant_order_id": t.order_id,
        "merchant_refund_id": t.refund_id,
        "txn_type": t.txn_type,
        "channel": t.channel,
        "channel_txn_id": t.txn_id,
        "amount": format_minor(t.amount_fen, "CNY"),
        "currency": "CNY",
        "status": t.status,
        "created_at": t.time.isoformat(),
    }
    return row | override


@pytest.fixture(scope="module")
def mixed_day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A hand-made WeChat day with one of everything (see the expectations in the test)."""
    d = tmp_path_factory.mktemp("mixed")
    p1 = pay("00012345", 1250, at(10), 1)
    p2 = pay("123E4", 99, at(11), 2)
    p3 = pay("123456789012345678", 123450, at(12), 3)
    r1 = Txn("wechatpay", "refund", p3.order_id, "R1", p3.txn_id, "50" + "0" * 26, 1000, at(12, 30))
    p4 = pay("=1+2", 500, at(13), 4)  # bill only
    p5 = pay("MM1", 2000, at(13, 30), 5)  # amount differs
    pq = pay("", 300, at(14), 6)  # empty 商户订单号: quarantined in the bill
    (d / "bill.csv").write_bytes(wechat_bill([p1, p2, p3, r1, p4, p5, pq]).encode("utf-8"))
    lonly = pay("LONLY", 700, at(15), 7)
    closed = pay("CLOSED1", 500, at(16), 8)
    rows = [
        ledger_row(p1, amount="12.5", created_at="2024-03-01T02:00:00Z"),
        ledger_row(p2, amount="0.99", created_at="2024-03-01T11:00:00+0800"),
        ledger_row(p3, amount="1,234.50"),
        ledger_row(r1, amount="010.00"),
        ledger_row(p5, amount="20.01"),
        ledger_row(lonly),
        ledger_row(closed, status="CLOSED"),
        ledger_row(pay("NAIVE", 100, at(9), 9), created_at="2024-03-01T09:00:00"),
        ledger_row(pay("NEG", 100, at(9), 10), amount="-1.00"),
        ledger_row(pay("ALI", 100, at(9), 11), channel="alipay"),
        ledger_row(pay("NEXT", 100, at(9), 12), created_at="2024-03-01T16:00:00Z"),
    ]
    write_ledger(rows, d / "ledger.csv")
    return {"bill": d / "bill.csv", "ledger": d / "ledger.csv"}


# --- summary.json adds up ---------------------------------------------------------------------


def amounts(df: pl.DataFrame) -> dict[str, str]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for amount, currency in df.select("amount", "currency").iter_rows():
        sums[currency] += Decimal(amount)
    return {c: str(v) for c, v in sorted(sums.items())}


def assert_summary_adds_up(r: Run) -> dict[str, Any]:
    s = r.summary
    bill, ledger, q = s["bill"], s["ledger"], s["queues"]
    assert s["rows_read"] == bill["rows_read"] + ledger["rows_read"]
    assert bill["rows_read"] == bill["rows_parsed"] + bill["rows_quarantined"]
    assert ledger["rows_read"] == (
        ledger["rows_parsed"] + ledger["rows_quarantined"] + ledger["rows_other_channels_or_days"]
    )
    assert s["quarantined"] == bill["rows_quarantined"] + ledger["rows_quarantined"]
    quarantine = pl.read_csv(r.out / "quarantine.csv", infer_schema=False)
    assert quarantine.height == s["quarantined"]
    assert quarantine.filter(pl.col("side") == "bill").height == bill["rows_quarantined"]
    assert bill["rows_parsed"] == s["matched"] + q["local_missing"]["count"]
    assert ledger["rows_parsed"] == (
        s["matched"] + q["channel_missing"]["count"] + s["ledger_unsettled"]
    )
    for name, columns in (
        ("local_missing", MISSING_COLUMNS),
        ("channel_missing", MISSING_COLUMNS),
        ("field_mismatch", MISMATCH_COLUMNS),
    ):
        df = r.queue(name)
        assert df.columns == columns
        assert q[name]["count"] == df.height
        assert (r.out / f"{name}.parquet").exists()
        if name != "field_mismatch":
            assert q[name]["amount"] == amounts(df)
            parquet = pl.read_parquet(r.out / f"{name}.parquet")
            assert parquet["amount_minor"].to_list() == [int(v) for v in df["amount_minor"]]
    fm, fq = r.queue("field_mismatch"), q["field_mismatch"]
    pairs = fm.unique(["txn_type", "merchant_order_id", "merchant_refund_id", "bill_line"])
    assert fq["pairs"] == pairs.height == s["matched_with_differences"] <= s["matched"]
    assert fq["amount"] == amounts(pairs)
    assert sum(fq["by_field"].values()) == fq["count"]
    assert fq["amount_rows"] == fq["by_field"].get("amount", 0)
    breaks = sum(q[n]["count"] for n in ("local_missing", "channel_missing", "field_mismatch"))
    assert s["exit_code"] == r.code == (1 if breaks or s["quarantined"] else 0)
    return s


@pytest.mark.parametrize(
    ("channel", "bill"),
    [("wechatpay", "wechatpay_20240301_ALL.csv"), ("alipay", "alipay_20240301.csv.zip")],
)
def test_sample_day_has_breaks_exit_1_and_the_summary_adds_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, channel: str, bill: str
) -> None:
    r = run(capsys, tmp_path, SAMPLE / bill, SAMPLE / "ledger_20240301.csv", channel=channel)
    assert r.code == 1
    assert r.stderr == ""
    s = assert_summary_adds_up(r)
    assert s["channel"] == channel
    assert s["business_date"] == "2024-03-01"
    assert s["queues"]["local_missing"]["count"] > 0
    assert s["queues"]["channel_missing"]["count"] > 0
    assert s["queues"]["field_mismatch"]["count"] > 0
    assert f"{channel} 2024-03-01: matched {s['matched']}," in r.stdout


@pytest.mark.parametrize("channel", ["wechatpay", "alipay"])
def test_bill_against_a_ledger_that_matches_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path], channel: str
) -> None:
    r = run(capsys, tmp_path, clean_day[channel], clean_day["ledger"], channel=channel)
    assert r.code == 0, r.stdout + r.stderr
    s = assert_summary_adds_up(r)
    assert s["matched"] == s["bill"]["rows_parsed"] > 0
    assert s["quarantined"] == 0
    assert s["ledger_unsettled"] == 1  # the CLOSED order the channel never bills
    for name in ("local_missing", "channel_missing", "field_mismatch", "quarantine"):
        assert r.queue(name).height == 0
    assert all(t["bill"] == t["rows"] for t in s["bill"]["control_totals"])


def test_quarantined_rows_alone_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    ledger = tmp_path / "ledger.csv"
    text = clean_day["ledger"].read_text(encoding="utf-8")
    naive = "NAIVE,,payment,wechatpay,,1.00,CNY,SUCCESS,2024-03-01T12:00:00\n"
    ledger.write_text(text + naive, encoding="utf-8")
    r = run(capsys, tmp_path, clean_day["wechatpay"], ledger)
    assert r.code == 1
    s = assert_summary_adds_up(r)
    assert s["quarantined"] == 1
    assert all(s["queues"][q]["count"] == 0 for q in ("local_missing", "channel_missing"))
    assert s["queues"]["field_mismatch"]["count"] == 0


def test_mixed_day_lands_every_row_where_it_belongs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mixed_day: dict[str, Path]
) -> None:
    r = run(capsys, tmp_path, mixed_day["bill"], mixed_day["ledger"])
    assert r.code == 1
    s = assert_summary_adds_up(r)
    assert (s["bill"]["rows_read"], s["bill"]["rows_parsed"], s["bill"]["rows_quarantined"]) == (
        7,
        6,
        1,
    )
    ledger = s["ledger"]
    assert (ledger["rows_read"], ledger["rows_parsed"], ledger["rows_quarantined"]) == (11, 7, 2)
    assert ledger["rows_other_channels_or_days"] == 2
    assert (s["matched"], s["ledger_unsettled"], s["quarantined"]) == (5, 1, 3)
    q = s["queues"]
    assert q["local_missing"] == {"count": 1, "amount": {"CNY": "5.00"}}
    assert q["channel_missing"] == {"count": 1, "amount": {"CNY": "7.00"}}
    assert q["field_mismatch"]["by_field"] == {"amount": 1}
    fm = r.queue("field_mismatch")
    assert fm.select("merchant_order_id", "ledger_value", "channel_value").rows() == [
        ("MM1", "20.01", "20.00")
    ]
    assert r.queue("channel_missing")["merchant_order_id"].to_list() == ["LONLY"]
    # formula-looking ids are neutralised in the CSV, kept raw in the Parquet
    assert r.queue("local_missing")["merchant_order_id"].to_list() == ["'=1+2"]
    assert pl.read_parquet(r.out / "local_missing.parquet")["merchant_order_id"].to_list() == [
        "=1+2"
    ]
    quarantine = pl.read_csv(r.out / "quarantine.csv", infer_schema=False)
    assert sorted(quarantine.select("side", "source_line", "column").rows()) == [
        ("bill", "8", "商户订单号"),
        ("ledger", "10", "amount"),
        ("ledger", "9", "created_at"),
    ]


# --- errors: exit 2, one line on stderr naming the file ----------------------------------------


def test_missing_bill(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bill = tmp_path / "nope.csv"
    r = run(capsys, tmp_path, bill, SAMPLE / "ledger_20240301.csv")
    assert_one_line_error(r, str(bill), "cannot read")
    assert not r.out.exists()


def test_bill_that_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = run(capsys, tmp_path, tmp_path, SAMPLE / "ledger_20240301.csv")
    assert_one_line_error(r, str(tmp_path), "cannot read")


@pytest.mark.parametrize("channel", ["wechatpay", "alipay"])
def test_bill_that_is_not_text(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, channel: str
) -> None:
    bill = tmp_path / "garbage.csv"
    bill.write_bytes(b"\xff\xfe\x00\x81\x82\x83" * 40)
    r = run(capsys, tmp_path, bill, SAMPLE / "ledger_20240301.csv", channel=channel)
    assert_one_line_error(r, str(bill))


def test_corrupt_alipay_zip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bill = tmp_path / "alipay.csv.zip"
    bill.write_bytes((SAMPLE / "alipay_20240301.csv.zip").read_bytes()[:200])
    r = run(capsys, tmp_path, bill, SAMPLE / "ledger_20240301.csv", channel="alipay")
    assert_one_line_error(r, str(bill))


@pytest.mark.parametrize(
    ("channel", "text", "fragment"),
    [
        ("wechatpay", "a,b,c\n1,2,3\n", "unknown WeChat Pay bill layout"),
        ("wechatpay", "", "unknown WeChat Pay bill layout"),
        ("alipay", "a,b,c\n1,2,3\n", "unknown Alipay bill layout"),
        ("alipay", "#only comments\n", "unknown Alipay bill layout"),
    ],
)
def test_unknown_bill_layout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, channel: str, text: str, fragment: str
) -> None:
    bill = tmp_path / "bill.csv"
    bill.write_text(text, encoding="utf-8")
    r = run(capsys, tmp_path, bill, SAMPLE / "ledger_20240301.csv", channel=channel)
    assert_one_line_error(r, str(bill), fragment)


def test_ledger_missing_a_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    ledger = tmp_path / "ledger.csv"
    pl.read_csv(clean_day["ledger"], infer_schema=False).drop("status").write_csv(ledger)
    r = run(capsys, tmp_path, clean_day["wechatpay"], ledger)
    assert_one_line_error(r, str(ledger), "status")


def test_missing_ledger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    ledger = tmp_path / "nope.csv"
    r = run(capsys, tmp_path, clean_day["wechatpay"], ledger)
    assert_one_line_error(r, str(ledger), "no such file")


def test_bill_whose_control_totals_do_not_match(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    lines = clean_day["wechatpay"].read_bytes().decode("utf-8").split("\r\n")
    assert lines[-1] == ""
    figures = lines[-2].split(",")
    real = figures[1].removeprefix("`")
    figures[1] = "`1.00"
    lines[-2] = ",".join(figures)
    bill = tmp_path / "bad_totals.csv"
    bill.write_bytes("\r\n".join(lines).encode("utf-8"))
    r = run(capsys, tmp_path, bill, clean_day["ledger"])
    assert_one_line_error(r, str(bill), "control totals", "1.00", real)
    assert not r.out.exists()  # nothing is reconciled against a bill that does not add up
    assert not r.store.exists()


def test_unknown_channel(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    r = run(capsys, tmp_path, clean_day["wechatpay"], clean_day["ledger"], channel="paypal")
    assert_one_line_error(r, "paypal", "channels.toml")


def test_rules_file_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    clean_day: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = tmp_path / "rules" / "only_alipay.toml"
    rules.parent.mkdir()
    rules.write_text(
        '[channels.alipay]\nparser = "alipay_detail"\ntimezone = "Asia/Shanghai"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("RECON_RULES", str(rules))
    r = run(capsys, tmp_path, clean_day["wechatpay"], clean_day["ledger"])
    assert_one_line_error(r, str(rules), "unknown channel 'wechatpay'")


@pytest.mark.parametrize("date", ["2024-13-01", "yesterday", "20240301x"])
def test_bad_date(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path], date: str
) -> None:
    r = run(capsys, tmp_path, clean_day["wechatpay"], clean_day["ledger"], date=date)
    assert_one_line_error(r, date)


def test_bad_date_exits_2_naming_the_value(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    r = run(capsys, tmp_path, clean_day["wechatpay"], clean_day["ledger"], date="2024-02-30")
    assert r.code == 2
    assert "not a date (YYYY-MM-DD): '2024-02-30'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not r.out.exists()


def test_full_width_ledger_amount_is_quarantined_not_fatal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mixed_day: dict[str, Path]
) -> None:
    ledger = tmp_path / "ledger.csv"
    df = pl.read_csv(mixed_day["ledger"], infer_schema=False)
    df.with_columns(
        pl.when(pl.col("merchant_order_id") == "LONLY")
        .then(pl.lit("７.00"))
        .otherwise(pl.col("amount"))
        .alias("amount")
    ).write_csv(ledger)
    r = run(capsys, tmp_path, mixed_day["bill"], ledger)
    assert r.code == 1, r.stderr
    assert r.summary["ledger"]["rows_quarantined"] == 3


def test_internal_error_is_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    clean_day: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise pl.exceptions.InvalidOperationError("conversion failed\n\nThis error occurred in ...")

    monkeypatch.setattr("recon.cli.reconcile_day", boom)
    monkeypatch.delenv("RECON_DEBUG", raising=False)
    r = run(capsys, tmp_path, clean_day["wechatpay"], clean_day["ledger"])
    assert r.code == 2
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


# --- recon parse ---------------------------------------------------------------------------------


def parse(
    capsys: pytest.CaptureFixture[str], bill: Path, out: Path, *extra: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["parse", "--channel", "wechatpay", "--bill", str(bill), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_parse_writes_the_standard_bill(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path], suffix: str
) -> None:
    out = tmp_path / "sub" / f"standard{suffix}"
    code, stdout, _ = parse(capsys, clean_day["wechatpay"], out)
    assert code == 0
    df = pl.read_csv(out, infer_schema=False) if suffix == ".csv" else pl.read_parquet(out)
    assert tuple(df.columns) == COLUMNS
    assert df.height > 0
    assert f"parsed {df.height}, quarantined 0" in stdout
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no quarantine file
    ids = set(df["merchant_order_id"])
    assert "00000000" in ids  # generated ids with leading zeros survive as text


def test_parse_with_quarantined_rows_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mixed_day: dict[str, Path]
) -> None:
    code, stdout, _ = parse(capsys, mixed_day["bill"], tmp_path / "standard.csv")
    assert code == 1
    assert "read 7, parsed 6, quarantined 1" in stdout


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_parse_writes_a_quarantine_file_beside_the_standard_bill(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mixed_day: dict[str, Path], suffix: str
) -> None:
    out = tmp_path / f"standard{suffix}"
    code, _, _ = parse(capsys, mixed_day["bill"], out)
    assert code == 1
    df = pl.read_csv(out, infer_schema=False) if suffix == ".csv" else pl.read_parquet(out)
    assert tuple(df.columns) == COLUMNS
    assert df.height == 6
    quarantine = pl.read_csv(tmp_path / "standard.quarantine.csv", infer_schema=False)
    assert quarantine.select("source_line", "column").rows() == [("8", "商户订单号")]


def test_parse_no_totals_accepts_an_excerpt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean_day: dict[str, Path]
) -> None:
    lines = clean_day["wechatpay"].read_bytes().decode("utf-8").split("\r\n")
    excerpt = lines[:3] + lines[-3:]  # header, two rows, the summary of the whole day
    bill = tmp_path / "excerpt.csv"
    bill.write_bytes("\r\n".join(excerpt).encode("utf-8"))
    code, _, err = parse(capsys, bill, tmp_path / "x.csv")
    assert code == 2
    assert "control totals do not match" in err
    code, _, _ = parse(capsys, bill, tmp_path / "y.csv", "--no-totals")
    assert code == 0
    assert pl.read_csv(tmp_path / "y.csv", infer_schema=False).height == 2
