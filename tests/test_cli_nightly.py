"""`recon nightly`: one channel-day end to end outside Airflow, fetch included, against a real sshd."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from data.generate import generate, wechat_bill, write_ledger
from recon.cli import main

pytest_plugins = ["tests.sshd"]

DAY = dt.date(2024, 3, 1)
REPO = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:  # pytest provides the fixture; importing it at run time would warn
    from tests.sshd import SshServer


def _rules(tmp: Path, remote_dir: Path) -> Path:
    text = (REPO / "rules" / "channels.toml").read_text("utf-8")
    text = text.replace('remote_dir = "/bills/wechatpay"', f'remote_dir = "{remote_dir}"')
    text = re.sub(r"stable_seconds = [0-9.]+", "stable_seconds = 0.2", text)
    text = text.replace(
        'store = "var/recon.duckdb"',
        f'store = "{tmp}/recon.duckdb"\narchive = "{tmp}/archive"\nwork = "{tmp}/runs"',
    )
    text = text.replace(
        'path = "data/sample/ledger_{date:%Y%m%d}.csv"',
        f'path = "{tmp}/ledger_{{date:%Y%m%d}}.csv"',
    )
    path = tmp / "rules.toml"
    path.write_text(text, "utf-8")
    return path


def test_nightly_fetches_and_reconciles_one_channel_day(
    sshd: SshServer,
    remote_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    day = generate(DAY, 80, seed=5)
    (remote_dir / f"wechatpay_{DAY:%Y%m%d}_ALL.csv").write_text(
        wechat_bill(day.bills["wechatpay"]), "utf-8"
    )
    write_ledger(day.ledger, tmp_path / f"ledger_{DAY:%Y%m%d}.csv")
    e = sshd.endpoint
    url = f"sftp://{e.username}@{e.host}:{e.port}/?key_file={quote(str(e.key_file))}&known_hosts={quote(str(e.known_hosts))}"
    monkeypatch.setenv("RECON_SFTP_WECHATPAY_URL", url)
    rules = _rules(tmp_path, remote_dir)

    code = main(
        ["--rules", str(rules), "nightly", "--channel", "wechatpay", "--date", DAY.isoformat()]
    )
    assert code == 1  # the generated day has breaks on purpose
    out = tmp_path / "runs" / "wechatpay" / DAY.isoformat() / "queues"
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["queues"]["local_missing"]["count"] == len(
        day.expected["wechatpay"].local_missing
    )
    assert (
        tmp_path / "archive" / "wechatpay" / DAY.isoformat() / f"wechatpay_{DAY:%Y%m%d}_ALL.csv"
    ).exists()
    assert "matched" in capsys.readouterr().out


def test_nightly_without_the_bill_says_so_and_exits_2(
    sshd: SshServer,
    remote_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    e = sshd.endpoint
    monkeypatch.setenv(
        "RECON_SFTP_WECHATPAY_URL",
        f"sftp://{e.username}@{e.host}:{e.port}/?key_file={quote(str(e.key_file))}&known_hosts={quote(str(e.known_hosts))}",
    )
    code = main(
        [
            "--rules",
            str(_rules(tmp_path, remote_dir)),
            "nightly",
            "--channel",
            "wechatpay",
            "--date",
            DAY.isoformat(),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "not delivered yet" in err[0]
