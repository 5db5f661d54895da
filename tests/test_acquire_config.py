"""SftpRules from `[channels.<name>.sftp]`, and SftpEndpoint from a URL: errors name the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from recon.acquire_config import SftpRules, checksum_algorithm
from recon.errors import ConfigError
from recon.rules import DEFAULT_RULES, load_rules
from recon.sftp import SftpEndpoint

WHERE = "channels.wechatpay.sftp"
DAY = dt.date(2025, 3, 14)
KEY_B64 = "AAAAC3NzaC1lZDI1NTE5AAAAIPth+AG/ASwafgtxBiuRYmHyeuTB1gydFlRXcihS30uX"


def table(**changes: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "conn_id": "sftp_wechatpay",
        "remote_dir": "/download/bills",
        "filename": "wechatpay_{date:%Y%m%d}_ALL.csv.gz",
        "completeness": "stable_size",
    }
    t.update(changes)
    return {k: v for k, v in t.items() if v is not None}


def test_minimal_table_takes_defaults() -> None:
    rules = SftpRules.from_table(table(), WHERE)
    assert rules == SftpRules(
        conn_id="sftp_wechatpay",
        remote_dir="/download/bills",
        filename="wechatpay_{date:%Y%m%d}_ALL.csv.gz",
        completeness="stable_size",
        marker_suffix=".ok",
        stable_seconds=2.0,
        checksum_suffix=None,
    )
    assert rules.remote_name(DAY) == "wechatpay_20250314_ALL.csv.gz"
    assert rules.remote_path(DAY) == "/download/bills/wechatpay_20250314_ALL.csv.gz"
    assert rules.checksum_name(DAY) is None


def test_marker_and_checksum() -> None:
    rules = SftpRules.from_table(
        table(completeness="marker", marker_suffix=".done", checksum_suffix=".sha256"), WHERE
    )
    assert rules.marker_name(DAY) == "wechatpay_20250314_ALL.csv.gz.done"
    assert rules.checksum_name(DAY) == "wechatpay_20250314_ALL.csv.gz.sha256"


def test_integer_seconds_are_accepted() -> None:
    assert SftpRules.from_table(table(stable_seconds=5), WHERE).stable_seconds == 5.0


@pytest.mark.parametrize("key", ["conn_id", "remote_dir", "filename", "completeness"])
def test_missing_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{WHERE}\.{key}: required key is missing$"):
        SftpRules.from_table(table(**{key: None}), WHERE)


def test_unknown_key() -> None:
    with pytest.raises(ConfigError, match=rf"^{WHERE}: unknown key\(s\) password$"):
        SftpRules.from_table(table(password="hunter2"), WHERE)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("conn_id", 7, "expected a string"),
        ("remote_dir", "  ", "must not be empty"),
        ("completeness", "size", "expected one of stable_size, marker"),
        ("completeness", ["marker"], "expected a string"),
        ("stable_seconds", "2", "expected a number"),
        ("stable_seconds", True, "expected a number"),
        ("stable_seconds", 0, "positive"),
        ("stable_seconds", -1.5, "positive"),
        ("stable_seconds", float("nan"), "positive"),
        ("filename", "bill.csv", "must contain the business date"),
        ("filename", "bill_{date:%Y%m}.csv", "must change from one day to the next"),
        ("filename", "bill_{day:%Y%m%d}.csv", "only the field 'date'"),
        ("filename", "bill_{0}.csv", "only the field 'date'"),
        ("filename", "bill_{date.nope}.csv", "only the field 'date'"),
        ("filename", "{date:%Y}/{date:%m%d}.csv", "plain file name"),
        ("checksum_suffix", ".crc32", "cannot tell the hash"),
        ("checksum_suffix", "", "must not be empty"),
        ("marker_suffix", ".ok", "only used with completeness = 'marker'"),
    ],
)
def test_bad_value_names_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SftpRules.from_table(table(**{key: value}), WHERE)
    assert str(caught.value).startswith(f"{WHERE}.{key}: ")
    assert message in str(caught.value)


def test_stable_seconds_with_marker_is_a_mistake() -> None:
    with pytest.raises(ConfigError, match=rf"^{WHERE}\.stable_seconds: only used"):
        SftpRules.from_table(table(completeness="marker", stable_seconds=1), WHERE)


def test_not_a_table() -> None:
    with pytest.raises(ConfigError, match=rf"^{WHERE}: expected a table"):
        SftpRules.from_table("sftp://x", WHERE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("suffix", "algorithm"),
    [(".sha256", "sha256"), (".SHA256SUM", "sha256"), (".md5", "md5"), (".sig", None)],
)
def test_checksum_algorithm(suffix: str, algorithm: str | None) -> None:
    assert checksum_algorithm(suffix) == algorithm


RULES_TOML = """
[channels.wechatpay]
parser = "wechatpay_v2"
timezone = "Asia/Shanghai"

[channels.wechatpay.sftp]
conn_id = "sftp_wechatpay"
remote_dir = "/download"
filename = "wechatpay_{date:%Y%m%d}_ALL.csv.gz"
completeness = "COMPLETENESS"
"""


def write_rules(tmp_path: Path, completeness: str) -> Path:
    path = tmp_path / "rules" / "channels.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(RULES_TOML.replace("COMPLETENESS", completeness), encoding="utf-8")
    return path


def test_from_the_rules_file(tmp_path: Path) -> None:
    channel = load_rules(write_rules(tmp_path, "marker")).channel("wechatpay")
    assert channel.sftp == SftpRules.from_table(channel.extra["sftp"], WHERE)
    assert channel.sftp is not None
    assert (channel.sftp.conn_id, channel.sftp.completeness) == ("sftp_wechatpay", "marker")


def test_rules_file_error_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{WHERE}\.completeness: expected one of"):
        load_rules(write_rules(tmp_path, "eventually"))


def test_shipped_rules_parse() -> None:
    for channel in load_rules(DEFAULT_RULES).channels.values():
        if "sftp" in channel.extra:
            SftpRules.from_table(channel.extra["sftp"], f"channels.{channel.name}.sftp")


def test_endpoint_from_url() -> None:
    url = (
        "sftp://bills%40corp:p%40ss+w0rd@sftp.example.com:2222/"
        "?key_file=/run/secrets/id_ed25519&known_hosts=/etc/recon/known_hosts"
        f"&host_key=ssh-ed25519%20{KEY_B64}"
    )
    endpoint = SftpEndpoint.from_url(url)
    assert (endpoint.host, endpoint.port) == ("sftp.example.com", 2222)
    assert (endpoint.username, endpoint.password) == ("bills@corp", "p@ss+w0rd")
    assert endpoint.key_file == Path("/run/secrets/id_ed25519")
    assert endpoint.known_hosts == Path("/etc/recon/known_hosts")
    assert endpoint.host_key == f"ssh-ed25519 {KEY_B64}"  # '+' in base64 kept as is
    assert endpoint.host_key_name == "[sftp.example.com]:2222"
    assert "p@ss" not in repr(endpoint)  # secrets never reach a log line


def test_endpoint_from_url_defaults() -> None:
    endpoint = SftpEndpoint.from_url("sftp://bills@sftp.example.com")
    assert (endpoint.port, endpoint.password, endpoint.key_file) == (22, None, None)
    assert endpoint.host_key_name == "sftp.example.com"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ssh://u@h/", "scheme"),
        ("sftp://h/", "user name is missing"),
        ("sftp://u@h:99999/", "bad port"),
        ("sftp://u@h/download", "no path"),
        ("sftp://u@h/?keyfile=/k", "bad option 'keyfile'"),
        ("sftp://u@h/?host_key=ssh-ed25519%20not-base64!", "host_key"),
    ],
)
def test_bad_url(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SftpEndpoint.from_url(url)
