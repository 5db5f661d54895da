"""A real OpenSSH sshd on 127.0.0.1 for SFTP tests, as the current user.

Use as a plugin from a test module: `pytest_plugins = ["tests.sshd"]`, then the `sshd` fixture
(one server per module) and `remote_dir` (a fresh directory the server serves, per test).
Tests are skipped only when /usr/sbin/sshd is not installed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recon.sftp import SftpEndpoint

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 10.0


@dataclass
class SshServer:
    endpoint: SftpEndpoint  # key login, known_hosts holding the server's key
    root: Path  # where tests put remote files (absolute paths; no chroot)
    host_key_line: str  # "ssh-ed25519 AAAA..."
    base: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.base / "sshd.log").read_text(errors="replace")

    def sessions(self) -> list[int]:
        """Pids of every process sshd forked (one tree per connection)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process went away
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], list(children.get(self.process.pid, []))
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def drop_sessions(self) -> int:
        """Kill the sshd processes serving connections: clients see the connection drop."""
        pids = self.sessions()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd sessions {pids} did not die")
            time.sleep(0.01)
        return len(pids)

    @staticmethod
    def keygen(path: Path) -> str:
        """Another key pair (an impostor host, a stranger client); the public key line."""
        return keygen(path, path.name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.drop_sessions()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie no longer holds the connection


def keygen(path: Path, comment: str) -> str:
    """A new passphrase-less ed25519 key at path; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _openssh_version() -> tuple[int, int]:
    # `sshd -V` prints the version (older releases print it in the usage text).
    done = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stdout + done.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(base: Path, port: int, host_key: Path, authorized_keys: Path) -> str:
    lines = [
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {host_key}",
        f"PidFile {base / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {getpass.getuser()}",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "MaxStartups 100",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if _openssh_version() >= (9, 8):
        # Killed sessions and refused keys would otherwise get 127.0.0.1 penalised.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def start_sshd(base: Path) -> SshServer:
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is not installed (apt-get install openssh-server)")
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start as root without it
    host_key, client_key = base / "host_ed25519", base / "client_ed25519"
    host_pub = keygen(host_key, "test-host")
    authorized_keys = base / "authorized_keys"
    authorized_keys.write_text(keygen(client_key, "test-client") + "\n")
    root = base / "remote"
    root.mkdir()
    log = base / "sshd.log"
    for _ in range(3):  # the free port may be taken before sshd binds it
        port = free_port()
        config = base / "sshd_config"
        config.write_text(_config(base, port, host_key, authorized_keys))
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if _wait_listening(process, port):
            break
        process.kill()
        process.wait()
    else:
        raise RuntimeError(f"sshd did not start:\n{log.read_text(errors='replace')}")
    key_type, key_b64 = host_pub.split()[:2]
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
    endpoint = SftpEndpoint(
        host="127.0.0.1",
        port=port,
        username=getpass.getuser(),
        key_file=client_key,
        known_hosts=known_hosts,
    )
    return SshServer(endpoint, root, f"{key_type} {key_b64}", base, process)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote_dir(sshd: SshServer, request: pytest.FixtureRequest) -> Path:
    """An empty directory the server serves, for this test only."""
    path = sshd.root / re.sub(r"\W", "_", request.node.name)[:60]
    path.mkdir()
    return path
