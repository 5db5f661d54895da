"""Long runs say how far they have got: per chunk of the bill, per batch of the ledger,
DuckDB's own estimate for its queries, all logged at most every few seconds."""

from __future__ import annotations

import gzip
import logging
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import duckdb
import polars as pl
import pytest

from data.demo_nightly import REPO
from data.generate import generate, write_day
from parsers.base import ParseProgress
from recon import pipeline, progress
from recon.ledger import LoadProgress, load_ledger_day
from recon.progress import Ticker, duck_progress, load_progress, parse_progress
from recon.rules import load_rules
from tests.test_ledger import row, write_csv
from tests.test_parser_chunks import FIXTURES, parse
from tests.test_pipeline import DAY, SH, reconcile


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_day(generate(DAY, 40, seed=5), DAY, tmp_path_factory.mktemp("day"))


def test_a_ticker_is_due_once_per_interval_and_not_at_the_start() -> None:
    clock = Clock()
    tick = Ticker(5.0, clock)
    assert not tick.due()
    clock.now += 4.9
    assert not tick.due()
    clock.now += 0.2
    assert tick.due()
    assert not tick.due()  # the next one is an interval later
    clock.now += 5.0
    assert tick.due()


def parsed_with_progress(
    channel: str, path: Path, tmp: Path, workers: int
) -> tuple[list[ParseProgress], int, int]:
    seen: list[ParseProgress] = []
    bill = parse(channel, path, tmp, chunk_bytes=200, workers=workers, progress=seen.append)
    return seen, bill.rows_read, bill.quarantine.height


@pytest.mark.parametrize("workers", [1, 2])
def test_a_plain_bill_reports_each_chunk_up_to_its_whole_size(tmp_path: Path, workers: int) -> None:
    path = FIXTURES / "wechatpay" / "bad_rows.csv"
    seen, rows_read, quarantined = parsed_with_progress("wechatpay", path, tmp_path, workers)
    assert len(seen) > 2  # one report per chunk
    assert [p.bytes_read for p in seen] == sorted({p.bytes_read for p in seen})  # rising
    assert [p.lines for p in seen] == sorted(p.lines for p in seen)
    assert [p.share for p in seen] == [p.bytes_read / path.stat().st_size for p in seen]
    assert seen[-1].bytes_read == path.stat().st_size
    assert (seen[-1].lines, seen[-1].quarantined) == (rows_read, quarantined)
    assert quarantined > 0


def test_a_gzip_bill_reports_the_share_of_the_compressed_file_read(tmp_path: Path) -> None:
    """Its text's size is not known ahead: the share is of the compressed file."""
    text = write_day(generate(DAY, 4000, seed=6), DAY, tmp_path)["wechatpay"].read_bytes()
    path = tmp_path / "bill.csv.gz"
    # Level 0 (stored): the compressed file is read as the text is, a block at a time
    # (gzip reads 128 KiB ahead), so the share must follow the chunks.
    path.write_bytes(gzip.compress(text, compresslevel=0))
    seen: list[ParseProgress] = []
    bill = parse(
        "wechatpay", path, tmp_path / "p", chunk_bytes=len(text) // 8, workers=1,
        progress=seen.append,
    )  # fmt: skip
    assert len(text) > 8 * 128 * 1024
    assert len(seen) >= 8
    assert seen[-1].bytes_read == len(text)
    shares = [p.share for p in seen if p.share is not None]
    assert len(shares) == len(seen)
    assert shares == sorted(shares)
    assert shares[0] < 0.5
    assert shares[-1] == 1.0
    assert seen[-1].lines == bill.rows_read


def test_a_zipped_bill_reports_the_share_of_its_entry_read(tmp_path: Path) -> None:
    text = (FIXTURES / "alipay" / "bad_rows.csv").read_bytes()
    zipped = tmp_path / "bill.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("20880000_业务明细.csv", text)
    seen, rows_read, quarantined = parsed_with_progress("alipay", zipped, tmp_path / "z", 1)
    assert len(seen) > 2
    assert [p.share for p in seen] == [p.bytes_read / len(text) for p in seen]
    assert seen[-1].share == 1.0
    assert (seen[-1].lines, seen[-1].quarantined) == (rows_read, quarantined)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_ledger_load_reports_each_batch(tmp_path: Path, kind: str) -> None:
    rows = [row(f"O{i}") for i in range(40)]
    rows += [row(f"X{i}", created_at="2024-03-03T12:00:00+08:00") for i in range(5)]  # other day
    rows += [row(f"B{i}", amount="1.0.0") for i in range(3)]  # quarantined
    path = write_csv(tmp_path / "l.csv", rows)
    if kind == "parquet":
        pl.read_csv(path, infer_schema=False).write_parquet(path := tmp_path / "l.parquet")
    seen: list[LoadProgress] = []
    day = load_ledger_day(
        path, "wechatpay", SH, DAY, tmp_path / "w", block_bytes=256, batch_rows=7,
        progress=seen.append,
    )  # fmt: skip
    assert len(seen) > 3
    assert [p.rows_read for p in seen] == sorted({p.rows_read for p in seen})
    assert [p.share for p in seen] == sorted({p.share for p in seen})
    assert 0 < seen[0].share < 0.5
    assert seen[-1] == LoadProgress(48, day.n_rows, day.quarantine.height, 1.0)
    assert (day.n_rows, day.quarantine.height) == (40, 3)


def test_reports_are_logged_only_when_due(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    report = parse_progress("wechatpay 2024-03-01: parse bill", Ticker(5.0, clock))
    with caplog.at_level(logging.INFO, logger="recon.progress"):
        report(ParseProgress(1000, 0, 10**6, 0.25))
        clock.now += 6
        report(ParseProgress(1_234_567, 3, 10**6, 0.25))
        report(ParseProgress(2_000_000, 3, 2 * 10**6, 0.5))
        clock.now += 6
        load_progress("wechatpay 2024-03-01: load ledger", Ticker(5.0, clock))(
            LoadProgress(10, 9, 1, 0.1)
        )  # not due: its ticker has just started
        load_progress("wechatpay 2024-03-01: load ledger", Ticker(0.0, clock))(
            LoadProgress(12_345, 12_000, 1, 0.123)
        )
        parse_progress("alipay 2024-03-01: parse bill", Ticker(0.0, clock))(
            ParseProgress(5, 0, 3_500_000, None)
        )
    assert caplog.messages == [
        "wechatpay 2024-03-01: parse bill: 1,234,567 rows read (3 quarantined), "
        "1.0 MB read (25% of the file)",
        "wechatpay 2024-03-01: load ledger: 12,345 rows read (12% of the file), "
        "12,000 of them the day's, 1 quarantined",
        "alipay 2024-03-01: parse bill: 5 rows read (0 quarantined), 3.5 MB read",
    ]


def test_duckdb_progress_is_logged_while_a_query_runs(caplog: pytest.LogCaptureFixture) -> None:
    con = duckdb.connect()
    con.execute("SET threads = 1")  # as long on any machine, however many cores
    # Many times the interval (about 1 s here): 150M rows probing a join against 1,000.
    slow = (
        "SELECT count(*) FROM range(150000000) a JOIN range(1000) b ON a.range % 100000 = b.range"
    )
    with caplog.at_level(logging.INFO, logger="recon.progress"), duck_progress(con, "diff", 0.05):
        assert con.execute(slow).fetchall() == [(1500000,)]
    shares = [float(m.split(": ")[1].split("%")[0]) for m in caplog.messages]
    assert shares, "no progress logged"
    assert all(0 <= s <= 100 for s in shares)
    assert all(m.endswith("% of DuckDB's current query") for m in caplog.messages)
    assert not [t for t in threading.enumerate() if t.name == "duck-progress"]


def test_duckdb_progress_stops_with_a_failing_block() -> None:
    con = duckdb.connect()
    with pytest.raises(duckdb.Error), duck_progress(con, "diff", every=0.05):
        con.sql("SELECT * FROM no_such_table").fetchall()
    assert not [t for t in threading.enumerate() if t.name == "duck-progress"]


def test_a_run_logs_its_stages_and_how_far_they_got(
    day_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # every report is due
    with caplog.at_level(logging.INFO, logger="recon.progress"):
        result = reconcile(day_files["wechatpay"], day_files["ledger"], tmp_path)
    bill, ledger = result.summary["bill"], result.summary["ledger"]
    what = "wechatpay 2024-03-01"
    rows = f"{what}: parse bill: {bill['rows_parsed']:,} rows read (0 quarantined)"
    assert any(m.startswith(rows) for m in caplog.messages), caplog.messages
    read = f"{what}: load ledger: {ledger['rows_read']:,} rows read"
    assert any(m.startswith(read) for m in caplog.messages), caplog.messages
    for stage in ("parse bill", "load ledger", "diff", "update breaks", "write queues"):
        assert any(m.startswith(f"{what}: {stage}") and " done in " in m for m in caplog.messages)


def test_parse_bill_reports_under_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside a run (the nightly DAG's parse task, `recon parse`), progress still goes
    to the log, named by channel and file."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    path = FIXTURES / "wechatpay" / "success.csv"
    size = path.stat().st_size / 1e6
    with caplog.at_level(logging.INFO, logger="recon.progress"):
        bill = pipeline.parse_bill(load_rules().channel("wechatpay"), path, work_dir=tmp_path)
    assert caplog.messages == [
        f"wechatpay: parse bill success.csv: {bill.rows_read:,} rows read (0 quarantined), "
        f"{size:,.1f} MB read (100% of the file)"
    ]


def recon_run(files: dict[str, Path], tmp: Path, *flags: str) -> list[str]:
    """The command line of `recon run` on ``files``, out to a folder named by ``flags``."""
    out = tmp / "-".join(["out", *flags])
    args = ["run", "--channel", "wechatpay", "--date", str(DAY), "--out", str(out)]
    args += ["--bill", str(files["wechatpay"]), "--ledger", str(files["ledger"])]
    args += ["--store", str(tmp / "s.duckdb")]
    return [sys.executable, "-m", "recon.cli", *flags, *args]


def shows_stages(stderr: str) -> bool:
    what = f"wechatpay {DAY}"
    return all(
        re.search(rf"recon.progress INFO {what}: {stage}.* \.\.\.\r?\n", stderr)
        and re.search(rf"recon.progress INFO {what}: {stage}.*: done in [0-9.]+ s\r?\n", stderr)
        for stage in ("parse bill", "load ledger", "diff", "update breaks", "write queues")
    )


def test_piped_the_cli_logs_progress_to_stderr_only_when_asked(
    day_files: dict[str, Path], tmp_path: Path
) -> None:
    def recon(*flags: str) -> subprocess.CompletedProcess[str]:
        cmd = recon_run(day_files, tmp_path, *flags)
        return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)

    quiet, verbose = recon(), recon("-v")
    assert quiet.returncode == verbose.returncode == 1  # the generated day has breaks
    assert quiet.stderr == ""
    assert shows_stages(verbose.stderr), verbose.stderr
    assert verbose.stdout.replace(str(tmp_path / "out--v"), "OUT") == quiet.stdout.replace(
        str(tmp_path / "out"), "OUT"
    )  # the same one-line result on stdout


def on_a_terminal(cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd`` with its stderr on a pseudo-terminal: (exit code, what it showed there)."""
    main, child = os.openpty()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=child, cwd=REPO)
    finally:
        os.close(child)
    shown = bytearray()
    try:
        while data := os.read(main, 65536):
            shown += data
    except OSError:  # EIO: the child has closed the terminal
        pass
    finally:
        os.close(main)
    return proc.wait(), shown.decode()


def test_on_a_terminal_the_cli_shows_its_progress_unless_quiet(
    day_files: dict[str, Path], tmp_path: Path
) -> None:
    code, shown = on_a_terminal(recon_run(day_files, tmp_path))
    assert code == 1
    assert shows_stages(shown), shown
    code, shown = on_a_terminal(recon_run(day_files, tmp_path, "-q"))
    assert (code, shown) == (1, "")
