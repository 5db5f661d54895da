"""The SFTP channel simulator, driven by real clients: paramiko's SSHClient and OpenSSH's sftp."""

from __future__ import annotations

import hashlib
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from data.sftp_simulator import (
    ChannelSimulator,
    SimulatorAddress,
    generate_ed25519_key,
    known_hosts_line,
)

PASSWORD = "correct horse"
BILL = "wechatpay_20240301_ALL.csv"
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Served:
    address: SimulatorAddress
    known_hosts: Path
    root: Path
    bill: bytes
    client_key: paramiko.PKey
    simulator: ChannelSimulator


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "channel"
    (root / "2024-03-01").mkdir(parents=True)
    # Random bytes: any corruption or reordering in transit changes the digest.
    bill = random.Random(7).randbytes(2 * 1024 * 1024 + 123)
    (root / BILL).write_bytes(bill)
    (root / "2024-03-01" / "summary.txt").write_text("3 rows\n")
    (tmp_path / "secret.txt").write_text("outside the served root\n")
    client_key = generate_ed25519_key()
    simulator = ChannelSimulator(root, authorized_keys=[client_key], password=PASSWORD)
    with simulator as address:
        known_hosts = address.write_known_hosts(tmp_path / "known_hosts")
        yield Served(address, known_hosts, root, bill, client_key, simulator)


def _connect(
    address: SimulatorAddress, known_hosts: Path, *, username: str | None = None, **auth: object
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address.host,
        address.port,
        username=username or address.username,
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
        **auth,
    )
    return client


@pytest.fixture
def sftp(served: Served) -> Iterator[paramiko.SFTPClient]:
    client = _connect(served.address, served.known_hosts, pkey=served.client_key)
    try:
        yield client.open_sftp()
    finally:
        client.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lists_and_stats(served: Served, sftp: paramiko.SFTPClient) -> None:
    assert sorted(sftp.listdir("/")) == ["2024-03-01", BILL]
    assert sftp.listdir("2024-03-01") == ["summary.txt"]
    assert sftp.normalize(".") == "/"
    attr = sftp.stat(BILL)
    assert attr.st_size == len(served.bill)
    assert attr.st_mode & 0o222 == 0  # shown read-only, as it behaves
    assert sftp.lstat("/2024-03-01").st_mode & 0o040000
    with pytest.raises(FileNotFoundError):
        sftp.stat("missing.csv")


def test_downloads_intact_with_prefetch_readv_and_resume(
    served: Served, sftp: paramiko.SFTPClient, tmp_path: Path
) -> None:
    want = _sha(served.bill)
    with sftp.open(BILL, "rb") as f:
        f.prefetch()  # pipelined reads, answered out of a single handle
        assert _sha(f.read()) == want

    local = tmp_path / "got.csv"
    sftp.get(BILL, str(local))  # getfo: prefetch plus a final size check
    assert _sha(local.read_bytes()) == want

    # Resume an interrupted download from where the local part file stops.
    offset = 1_234_567
    with sftp.open(BILL, "rb") as f:
        f.seek(offset)
        f.prefetch(len(served.bill))  # prefetches from the position up to this end offset
        rest = f.read()
    assert _sha(served.bill[:offset] + rest) == want

    chunks = [(0, 10), (offset, 100_000), (len(served.bill) - 5, 5)]
    with sftp.open(BILL, "rb") as f:
        got = list(f.readv(chunks))
    assert got == [served.bill[o : o + n] for o, n in chunks]


def test_password_login_and_concurrent_sessions(served: Served) -> None:
    first = _connect(served.address, served.known_hosts, password=PASSWORD)
    second = _connect(served.address, served.known_hosts, pkey=served.client_key)
    try:
        assert BILL in first.open_sftp().listdir()
        assert BILL in second.open_sftp().listdir()
    finally:
        first.close()
        second.close()


def test_wrong_host_key_is_rejected(served: Served, tmp_path: Path) -> None:
    impostor = known_hosts_line(served.address.host, served.address.port, generate_ed25519_key())
    known_hosts = tmp_path / "impostor_known_hosts"
    known_hosts.write_text(impostor + "\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _connect(served.address, known_hosts, password=PASSWORD)


def test_unknown_host_is_rejected(served: Served, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connect(served.address, empty, password=PASSWORD)


def test_wrong_password_fails_auth(served: Served) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        _connect(served.address, served.known_hosts, password="wrong")


def test_unknown_client_key_fails_auth(served: Served) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        _connect(served.address, served.known_hosts, pkey=generate_ed25519_key())


def test_wrong_user_fails_auth(served: Served) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        _connect(served.address, served.known_hosts, username="mallory", password=PASSWORD)


def test_writes_are_refused(served: Served, sftp: paramiko.SFTPClient, tmp_path: Path) -> None:
    upload = tmp_path / "upload.csv"
    upload.write_text("x\n")
    refused: list[Callable[[], object]] = [
        lambda: sftp.put(str(upload), "new.csv"),
        lambda: sftp.open(BILL, "r+b"),
        lambda: sftp.open(BILL, "ab"),
        lambda: sftp.remove(BILL),
        lambda: sftp.rename(BILL, "moved.csv"),
        lambda: sftp.posix_rename(BILL, "moved.csv"),
        lambda: sftp.mkdir("new"),
        lambda: sftp.rmdir("2024-03-01"),
        lambda: sftp.chmod(BILL, 0o777),
        lambda: sftp.symlink(BILL, "link.csv"),
    ]
    for attempt in refused:
        with pytest.raises(PermissionError):
            attempt()
    assert sorted(os.listdir(served.root)) == ["2024-03-01", BILL]
    assert _sha((served.root / BILL).read_bytes()) == _sha(served.bill)


def test_paths_cannot_escape_the_root(served: Served, sftp: paramiko.SFTPClient) -> None:
    # ".." stops at the root, as in a chroot: these name files inside it, which do not exist.
    for path in ["../secret.txt", "/../../secret.txt", "2024-03-01/../../secret.txt"]:
        with pytest.raises(FileNotFoundError):
            sftp.stat(path)
        with pytest.raises(FileNotFoundError):
            sftp.open(path)
    assert sorted(sftp.listdir("..")) == sorted(sftp.listdir("/"))
    assert sftp.normalize("../..") == "/"

    # A symlink in the tree that points outside is refused too.
    (served.root / "escape.txt").symlink_to(served.root.parent / "secret.txt")
    (served.root / "escape_dir").symlink_to(served.root.parent)
    escapes: list[Callable[[], object]] = [
        lambda: sftp.open("escape.txt"),
        lambda: sftp.stat("escape.txt"),
        lambda: sftp.listdir("escape_dir"),
        lambda: sftp.stat("escape_dir/secret.txt"),
    ]
    for attempt in escapes:
        with pytest.raises(PermissionError):
            attempt()
    assert sftp.lstat("escape.txt").st_mode & 0o170000 == 0o120000  # the link itself is visible


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll briefly instead of sleeping for the whole delay."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_publish_later_appears_whole_and_late(
    served: Served, sftp: paramiko.SFTPClient, tmp_path: Path
) -> None:
    src = tmp_path / "late_source.csv"
    src.write_bytes(b"late bill\n" * 1000)
    started = time.monotonic()
    served.simulator.publish(src, "2024-03-01/late.csv", after=0.5)
    src.unlink()  # copied at publish time, so the source may go at once

    assert "late.csv" not in sftp.listdir("2024-03-01")
    with pytest.raises(FileNotFoundError):
        sftp.stat("2024-03-01/late.csv")

    assert _wait_for(lambda: "late.csv" in sftp.listdir("2024-03-01"))
    assert time.monotonic() - started >= 0.5
    with sftp.open("2024-03-01/late.csv", "rb") as f:
        assert f.read() == b"late bill\n" * 1000
    assert not list(tmp_path.glob(".channel.*"))  # no staged copy left behind


def test_publish_into_a_new_directory_shows_the_directory_at_once(
    served: Served, sftp: paramiko.SFTPClient, tmp_path: Path
) -> None:
    src = tmp_path / "src.csv"
    src.write_text("a\n")
    served.simulator.publish(src, "alipay/2024-03-01/bill.csv", after=0.3)
    # Like a real channel's server: the directory is there, the bill is not yet.
    assert sftp.listdir("alipay/2024-03-01") == []
    assert _wait_for(lambda: sftp.listdir("alipay/2024-03-01") == ["bill.csv"])


def test_publish_now_and_exit_drops_pending(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src = tmp_path / "src.csv"
    src.write_text("a\n")
    simulator = ChannelSimulator(root, password=PASSWORD)
    with simulator:
        simulator.publish(src, "now.csv")
        assert (root / "now.csv").read_text() == "a\n"
        simulator.publish(src, "never.csv", after=60)
        assert len(list(tmp_path.glob(".root.*"))) == 1
    assert not (root / "never.csv").exists()
    assert not list(tmp_path.glob(".root.*"))
    with pytest.raises(ValueError, match="relative path"):
        simulator.publish(src, "../outside.csv")
    with pytest.raises(RuntimeError, match="stopped"):
        simulator.publish(src, "after_exit.csv")


def test_needs_some_way_to_log_in(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="authorized_keys"):
        ChannelSimulator(tmp_path)


@pytest.mark.skipif(shutil.which("sftp") is None, reason="needs OpenSSH's sftp client")
def test_openssh_sftp_client(served: Served, tmp_path: Path) -> None:
    # OpenSSH cannot use a paramiko key object: give it its own key, in a 0600 file.
    private = Ed25519PrivateKey.generate()
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    openssh_key = paramiko.Ed25519Key(filename=str(key_file))
    batch = tmp_path / "batch"
    local = tmp_path / "openssh_got.csv"
    batch.write_text(f"ls -l\nget {BILL} {local}\n-put {batch} uploaded\n")
    root = served.root
    with ChannelSimulator(root, authorized_keys=[openssh_key]) as address:
        known_hosts = address.write_known_hosts(tmp_path / "openssh_known_hosts")
        options = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
        }
        command = ["sftp", "-F", "/dev/null", "-b", str(batch), "-P", str(address.port)]
        command += ["-i", str(key_file)]
        for option, value in options.items():
            command += ["-o", f"{option}={value}"]
        result = subprocess.run(
            [*command, f"{address.username}@{address.host}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert BILL in result.stdout
    assert "ermission denied" in result.stderr  # the "-put" (failure tolerated) was refused
    assert _sha(local.read_bytes()) == _sha(served.bill)
    assert not (root / "uploaded").exists()


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """What the process printed up to `marker`, without ever blocking past `timeout`."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
    return out


def test_cli_serves_until_interrupted(served: Served, tmp_path: Path) -> None:
    log_file = tmp_path / "cli.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "data.sftp_simulator", "--root", str(served.root)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        out = _read_until(proc, b"Ctrl-C", timeout=20).decode()
        assert "Ctrl-C" in out, log_file.read_text()
        # "label     value" lines, labels padded to 10 columns
        printed = {line[:10].strip(): line[10:].strip() for line in out.splitlines()}
        known_hosts = printed["host key"].split()[0]
        host, port = known_hosts.strip("[").split("]:")
        address = SimulatorAddress(host, int(port), "recon", printed["host key"])
        client = _connect(
            address,
            address.write_known_hosts(tmp_path / "cli_known_hosts"),
            password=printed["password"],
        )
        try:
            assert BILL in client.open_sftp().listdir()
        finally:
            client.close()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
