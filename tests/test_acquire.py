"""fetch_bill against a real OpenSSH sshd (tests/sshd.py): completeness, host keys, resume."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import random
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from recon.acquire import BillNotReady, ChecksumMismatch, check_ready, fetch_bill
from recon.acquire_config import SftpRules
from recon.archive import MANIFEST, Archive, ArchivedBill
from recon.sftp import (
    AuthError,
    HostKeyError,
    PermanentFetchError,
    SftpEndpoint,
    TransientFetchError,
    connect,
)

if TYPE_CHECKING:  # imported at run time as a plugin only, so pytest can rewrite its asserts
    from tests.sshd import SshServer

pytest_plugins = ["tests.sshd"]
pytestmark = pytest.mark.sshd

CHANNEL = "wechatpay"
DAY = dt.date(2025, 3, 14)
NAME = "wechatpay_20250314_ALL.csv.gz"
# A real drop can catch paramiko's prefetch thread still queueing read requests: that
# thread dies with the connection (and says so); the download resumes on a new one.
PREFETCH_THREAD_DIES = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)


def no_sleep(seconds: float) -> None:
    pass


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def make_rules(remote_dir: Path, **changes: Any) -> SftpRules:
    rules = SftpRules(
        conn_id="sftp_wechatpay",
        remote_dir=str(remote_dir),
        filename="wechatpay_{date:%Y%m%d}_ALL.csv.gz",
        completeness="stable_size",
        stable_seconds=0.01,
    )
    return dataclasses.replace(rules, **changes)


def fetch(
    sshd: SshServer,
    rules: SftpRules,
    archive_root: Path,
    *,
    endpoint: SftpEndpoint | None = None,
    sleep: Callable[[float], None] = no_sleep,
    **kw: Any,
) -> ArchivedBill:
    return fetch_bill(
        endpoint or sshd.endpoint, rules, CHANNEL, DAY, archive_root, sleep=sleep, **kw
    )


def archived_files(archive_root: Path) -> list[Path]:
    """Everything in the archive, part files in .tmp included."""
    if not archive_root.exists():
        return []
    return sorted(p for p in archive_root.rglob("*") if p.is_file())


def manifest(archive_root: Path) -> list[dict[str, Any]]:
    path = archive_root / CHANNEL / DAY.isoformat() / MANIFEST
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bill_is_fetched_once_it_appears(
    sshd: SshServer, remote_dir: Path, archive_root: Path
) -> None:
    rules = make_rules(remote_dir)
    data = payload(200_000)
    not_ready: list[str] = []
    for _ in range(5):
        if len(not_ready) == 2:
            (remote_dir / NAME).write_bytes(data)  # delivered between the 2nd and 3rd poll
        try:
            bill = fetch(sshd, rules, archive_root)
            break
        except BillNotReady as exc:
            not_ready.append(str(exc))
            assert archived_files(archive_root) == []
    assert len(not_ready) == 2
    assert all(msg.endswith(f"{NAME}: not delivered yet") for msg in not_ready)
    assert bill.is_new
    assert bill.version == 1
    assert bill.path == archive_root / CHANNEL / "2025-03-14" / NAME
    assert bill.path.read_bytes() == data
    assert bill.sha256 == sha(data)
    assert bill.size == len(data)
    assert bill.source == str(remote_dir / NAME)
    [entry] = manifest(archive_root)
    assert entry["sha256"] == sha(data)
    assert entry["version"] == 1
    assert entry["source"] == str(remote_dir / NAME)
    assert dt.datetime.fromisoformat(entry["fetched_at"]).utcoffset() == dt.timedelta(0)
    assert Archive(archive_root).latest(CHANNEL, DAY, NAME) == dataclasses.replace(
        bill, is_new=False
    )


def test_bill_still_being_written_is_not_taken(
    sshd: SshServer, remote_dir: Path, archive_root: Path
) -> None:
    rules = make_rules(remote_dir, stable_seconds=2.0)
    data = payload(300_000)
    pieces = [data[:100_000], data[100_000:200_000], data[200_000:]]
    target = remote_dir / NAME
    target.write_bytes(pieces.pop(0))
    waits: list[float] = []

    def writer_keeps_writing(seconds: float) -> None:
        # Called between the two size looks: the channel appends more of the bill.
        waits.append(seconds)
        if pieces:
            with target.open("ab") as f:
                f.write(pieces.pop(0))

    for _ in range(2):
        with pytest.raises(BillNotReady, match="still being written"):
            fetch(sshd, rules, archive_root, sleep=writer_keeps_writing)
        assert archived_files(archive_root) == []
    bill = fetch(sshd, rules, archive_root, sleep=writer_keeps_writing)
    assert waits == [2.0, 2.0, 2.0]
    assert bill.path.read_bytes() == data


def test_check_ready_only_looks(sshd: SshServer, remote_dir: Path, archive_root: Path) -> None:
    rules = make_rules(remote_dir, checksum_suffix=".sha256")
    with pytest.raises(BillNotReady, match="not delivered yet"):
        check_ready(sshd.endpoint, rules, DAY, sleep=no_sleep)
    data = payload(10_000)
    (remote_dir / NAME).write_bytes(data)
    with pytest.raises(BillNotReady, match="checksum file not there yet"):
        check_ready(sshd.endpoint, rules, DAY, sleep=no_sleep)
    (remote_dir / (NAME + ".sha256")).write_text(f"{sha(data)}  {NAME}\n")
    assert check_ready(sshd.endpoint, rules, DAY, sleep=no_sleep) == str(remote_dir / NAME)
    assert archived_files(archive_root) == []


def test_empty_file_is_not_taken(sshd: SshServer, remote_dir: Path, archive_root: Path) -> None:
    (remote_dir / NAME).write_bytes(b"")
    with pytest.raises(BillNotReady, match="empty"):
        fetch(sshd, make_rules(remote_dir), archive_root)


def test_marker_completeness(sshd: SshServer, remote_dir: Path, archive_root: Path) -> None:
    rules = make_rules(remote_dir, completeness="marker", marker_suffix=".ok")
    data = payload(50_000)
    (remote_dir / NAME).write_bytes(data)
    waits: list[float] = []
    with pytest.raises(BillNotReady, match=r"marker wechatpay_20250314_ALL\.csv\.gz\.ok"):
        fetch(sshd, rules, archive_root, sleep=waits.append)
    assert archived_files(archive_root) == []
    (remote_dir / (NAME + ".ok")).write_bytes(b"")
    bill = fetch(sshd, rules, archive_root, sleep=waits.append)
    assert bill.path.read_bytes() == data
    assert waits == []  # the marker says complete: no size watching


def test_wrong_host_key_fails_at_once(
    sshd: SshServer, remote_dir: Path, archive_root: Path, tmp_path: Path
) -> None:
    (remote_dir / NAME).write_bytes(payload(10_000))
    other = sshd.keygen(tmp_path / "impostor").split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.endpoint.port} {other[0]} {other[1]}\n")
    waits: list[float] = []
    with pytest.raises(HostKeyError) as caught:
        fetch(
            sshd,
            make_rules(remote_dir),
            archive_root,
            endpoint=dataclasses.replace(sshd.endpoint, known_hosts=known_hosts),
            sleep=waits.append,
        )
    assert isinstance(caught.value, PermanentFetchError)
    assert not isinstance(caught.value, TransientFetchError)  # the DAG must not retry it
    assert waits == []
    assert archived_files(archive_root) == []


def test_host_key_given_with_the_connection(sshd: SshServer, tmp_path: Path) -> None:
    right = dataclasses.replace(sshd.endpoint, known_hosts=None, host_key=sshd.host_key_line)
    with connect(right, timeout=10) as sftp:
        assert stat.S_ISDIR(sftp.stat(str(sshd.root)).st_mode)
    other = sshd.keygen(tmp_path / "impostor")
    wrong = dataclasses.replace(right, host_key=other)
    with pytest.raises(HostKeyError, match="mismatch"), connect(wrong, timeout=10):
        pass


def test_unknown_host_is_rejected_not_added(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:1 {sshd.host_key_line}\n")  # another port
    endpoint = dataclasses.replace(sshd.endpoint, known_hosts=known_hosts)
    with pytest.raises(HostKeyError, match="no expected host key"), connect(endpoint, 10):
        pass
    assert known_hosts.read_text() == f"[127.0.0.1]:1 {sshd.host_key_line}\n"
    no_key = dataclasses.replace(sshd.endpoint, known_hosts=None)
    with pytest.raises(HostKeyError, match="refusing to connect"), connect(no_key, 10):
        pass


def test_bad_client_key_is_an_auth_error(
    sshd: SshServer, remote_dir: Path, archive_root: Path, tmp_path: Path
) -> None:
    (remote_dir / NAME).write_bytes(payload(10_000))
    sshd.keygen(tmp_path / "stranger")
    endpoint = dataclasses.replace(sshd.endpoint, key_file=tmp_path / "stranger")
    with pytest.raises(AuthError) as caught:
        fetch(sshd, make_rules(remote_dir), archive_root, endpoint=endpoint)
    assert not isinstance(caught.value, TransientFetchError)
    assert archived_files(archive_root) == []
    # The server takes keys only; a password is refused the same way.
    password_only = dataclasses.replace(sshd.endpoint, key_file=None, password="secret")
    with pytest.raises(AuthError), connect(password_only, 10):
        pass
    # The key can also come as text (from an Airflow connection), never from a repo file.
    as_text = dataclasses.replace(
        sshd.endpoint, key_file=None, private_key=(tmp_path / "stranger").read_text()
    )
    with pytest.raises(AuthError), connect(as_text, 10):
        pass


def test_private_key_text_logs_in(sshd: SshServer) -> None:
    assert sshd.endpoint.key_file is not None
    endpoint = dataclasses.replace(
        sshd.endpoint, key_file=None, private_key=sshd.endpoint.key_file.read_text()
    )
    with connect(endpoint, timeout=10) as sftp:
        assert stat.S_ISDIR(sftp.stat(str(sshd.root)).st_mode)


def test_server_down_is_transient(sshd: SshServer) -> None:
    endpoint = dataclasses.replace(sshd.endpoint, port=1)
    with pytest.raises(TransientFetchError), connect(endpoint, timeout=5):
        pass


@PREFETCH_THREAD_DIES
def test_dropped_connection_resumes(
    sshd: SshServer, remote_dir: Path, archive_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(8 << 20, seed=7)  # well past paramiko's 2 MB window: the drop is mid-file
    (remote_dir / NAME).write_bytes(data)
    seen: list[int] = []
    killed: list[int] = []
    day_dir = archive_root / CHANNEL / DAY.isoformat()

    def cut_after_first_chunk(done: int, total: int) -> None:
        seen.append(done)
        assert not day_dir.exists()  # the part file lives in .tmp, not in the archive
        if not killed:
            killed.append(sshd.drop_sessions())  # sshd's own processes die: a real drop

    with caplog.at_level(logging.WARNING, logger="recon.acquire"):
        bill = fetch(sshd, make_rules(remote_dir), archive_root, on_progress=cut_after_first_chunk)

    assert killed
    assert killed[0] > 0
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lost) == 1
    m = re.search(r"at byte (\d+) of (\d+)", lost[0])
    assert m is not None
    at = int(m.group(1))
    assert 0 < at < len(data)
    assert seen == sorted(set(seen))
    assert seen[-1] == len(data)
    assert bill.sha256 == sha(data)
    assert bill.path.read_bytes() == data
    assert archived_files(archive_root) == sorted([bill.path, day_dir / MANIFEST])


@PREFETCH_THREAD_DIES
def test_resumes_are_bounded(sshd: SshServer, remote_dir: Path, archive_root: Path) -> None:
    data = payload(8 << 20, seed=8)
    (remote_dir / NAME).write_bytes(data)
    drops: list[int] = []

    def cut_every_connection(done: int, total: int) -> None:
        if sshd.sessions():  # a live connection (after a drop, reads drain the buffer)
            drops.append(sshd.drop_sessions())

    with pytest.raises(TransientFetchError, match="connection lost 3 times"):
        fetch(
            sshd,
            make_rules(remote_dir),
            archive_root,
            on_progress=cut_every_connection,
            max_resumes=2,
        )
    assert len(drops) == 3
    assert archived_files(archive_root) == []


def test_same_bill_twice_is_archived_once(
    sshd: SshServer, remote_dir: Path, archive_root: Path
) -> None:
    rules = make_rules(remote_dir)
    data = payload(100_000)
    (remote_dir / NAME).write_bytes(data)
    first = fetch(sshd, rules, archive_root)
    downloads: list[int] = []

    def count(done: int, total: int) -> None:
        downloads.append(done)

    again = fetch(sshd, rules, archive_root, on_progress=count)
    assert downloads == []  # same size and mtime: not downloaded again
    assert (again.version, again.sha256, again.is_new) == (1, first.sha256, False)

    forced = fetch(sshd, rules, archive_root, force=True, on_progress=count)
    assert downloads  # downloaded, but the content is the archived one
    assert (forced.version, forced.is_new) == (1, False)

    os.utime(remote_dir / NAME, (1_700_000_000, 1_700_000_000))  # re-delivered, same bytes
    redelivered = fetch(sshd, rules, archive_root)
    assert (redelivered.version, redelivered.is_new) == (1, False)
    assert len(manifest(archive_root)) == 1
    assert archived_files(archive_root) == sorted([first.path, first.path.with_name(MANIFEST)])


def test_changed_bill_becomes_a_new_version(
    sshd: SshServer, remote_dir: Path, archive_root: Path
) -> None:
    rules = make_rules(remote_dir)
    old, new = payload(100_000, seed=1), payload(100_000, seed=2)
    (remote_dir / NAME).write_bytes(old)
    v1 = fetch(sshd, rules, archive_root)
    (remote_dir / NAME).write_bytes(new)  # the channel corrects the bill, same name and size
    os.utime(remote_dir / NAME, (1_800_000_000, 1_800_000_000))
    v2 = fetch(sshd, rules, archive_root)
    assert (v1.version, v2.version, v2.is_new) == (1, 2, True)
    assert v2.path == archive_root / CHANNEL / "2025-03-14" / "v2" / NAME
    assert v1.path.read_bytes() == old
    assert v2.path.read_bytes() == new
    assert [e["sha256"] for e in manifest(archive_root)] == [sha(old), sha(new)]
    assert Archive(archive_root).latest(CHANNEL, DAY, NAME) == dataclasses.replace(v2, is_new=False)


def test_checksum_sidecar(sshd: SshServer, remote_dir: Path, archive_root: Path) -> None:
    rules = make_rules(remote_dir, checksum_suffix=".sha256")
    data = payload(100_000)
    (remote_dir / NAME).write_bytes(data)
    with pytest.raises(BillNotReady, match="checksum file not there yet"):
        fetch(sshd, rules, archive_root)

    sidecar = remote_dir / (NAME + ".sha256")
    sidecar.write_text(f"{sha(b'something else')}  {NAME}\n")
    with pytest.raises(ChecksumMismatch, match="the checksum file says"):
        fetch(sshd, rules, archive_root)
    assert archived_files(archive_root) == []  # the part file is gone too

    sidecar.write_text(f"{sha(data)}  {NAME}\n")
    bill = fetch(sshd, rules, archive_root)
    assert bill.sha256 == sha(data)
