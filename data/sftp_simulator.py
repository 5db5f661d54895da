"""A channel's SFTP server, simulated: serves a local directory read-only over real SFTP.

Payment channels publish their bills on SFTP; the demo's nightly DAGs fetch them from this
simulator instead. It runs paramiko's server side on 127.0.0.1, so any ordinary client
(paramiko's SFTPClient, OpenSSH's `sftp`) can list, stat and download, including pipelined and
resumed reads. Everything that would change the served tree is refused, and client paths are
confined to the served root. `publish(after=...)` makes a bill appear late, as real channels do.

    python -m data.sftp_simulator --root data/sample [--port 2222]
"""

from __future__ import annotations

import argparse
import errno
import hmac
import io
import logging
import os
import posixpath
import secrets
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from types import TracebackType
from typing import Any, TypeVar

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger("recon.simulator")

HOST = "127.0.0.1"  # loopback only: the CLI prints its password, so never listen outside
# OpenSSH's sftp-server caps a read at 256 KiB too; short reads are legal and clients re-ask.
MAX_READ = 256 * 1024
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_EXCL
_JOIN_TIMEOUT = 5.0  # per thread, so a wedged client cannot hang __exit__
_POLL = 0.2  # how often a connection's loop notices that the simulator is stopping

_T = TypeVar("_T")

# paramiko has no type stubs; pin the codes we answer with to int once.
_DENIED: int = paramiko.SFTP_PERMISSION_DENIED
_NO_SUCH_FILE: int = paramiko.SFTP_NO_SUCH_FILE
_FAILURE: int = paramiko.SFTP_FAILURE
_AUTH_OK: int = paramiko.AUTH_SUCCESSFUL
_AUTH_FAILED: int = paramiko.AUTH_FAILED
_OPEN_OK: int = paramiko.OPEN_SUCCEEDED
_OPEN_PROHIBITED: int = paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


def _status(e: OSError) -> int:
    code: int = paramiko.SFTPServer.convert_errno(e.errno)
    return code


def generate_ed25519_key() -> paramiko.PKey:
    """A fresh Ed25519 key. paramiko cannot generate one, so `cryptography` does and paramiko
    loads it back from OpenSSH private-key text."""
    text = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )
    return paramiko.Ed25519Key(file_obj=io.StringIO(text))


def known_hosts_line(host: str, port: int, key: paramiko.PKey) -> str:
    # OpenSSH and paramiko both look non-default ports up as "[host]:port".
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {key.get_name()} {key.get_base64()}"


@dataclass(frozen=True)
class SimulatorAddress:
    host: str
    port: int
    username: str
    host_key_line: str  # "[127.0.0.1]:PORT ssh-ed25519 AAAA...", a known_hosts line

    def write_known_hosts(self, path: Path) -> Path:
        """Write (replacing) a known_hosts file that trusts exactly this simulator."""
        path.write_text(self.host_key_line + "\n", encoding="ascii")
        return path


# ---------------------------------------------------------------------------------------------
# Paths: the client sees the served root as "/", and nothing outside it.


def _virtual(path: str) -> str:
    """Normalise a client path to an absolute path under the virtual "/".

    Relative paths start at "/" (the session never changes directory) and ".." stops at "/",
    the way a chrooted OpenSSH behaves, so "../../etc/passwd" means "/etc/passwd" in the root.
    """
    norm = posixpath.normpath("/" + path)
    return "/" + norm.lstrip("/")  # normpath keeps a leading "//"


class _Confined(Exception):
    """A path that resolves (through a symlink) outside the served root."""


class _Tree:
    """Maps client paths to local paths inside `root`, refusing any that escape it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def local(self, path: str, *, follow: bool = True) -> Path:
        rel = _virtual(path).lstrip("/")
        if not rel:
            return self.root
        candidate = self.root / rel
        # Symlinks are resolved before the check so that a link cannot point a client outside.
        # lstat must not follow the last component, so only its parent is resolved then.
        try:
            real = candidate.resolve() if follow else candidate.parent.resolve() / candidate.name
        except RuntimeError as e:  # a symlink loop (Python 3.11 raises RuntimeError for it)
            raise OSError(errno.ELOOP, str(e)) from e
        if not real.is_relative_to(self.root):
            raise _Confined(path)
        return real


def _attributes(st: os.stat_result, filename: str) -> paramiko.SFTPAttributes:
    attr = paramiko.SFTPAttributes.from_stat(st, filename)
    # Show the tree as it behaves: nothing here is writable through this server.
    attr.st_mode = st.st_mode & ~0o222
    return attr


def _errors(op: Callable[..., _T]) -> Callable[..., _T | int]:
    """Turn local failures into SFTP status codes instead of a generic SFTP_FAILURE."""

    def wrapper(self: _ReadOnlySFTP, path: str, *args: Any) -> _T | int:
        try:
            return op(self, path, *args)
        except _Confined:
            log.warning("%s: refused %s %r: outside the served root", self.peer, op.__name__, path)
            return _DENIED
        except ValueError:  # e.g. a NUL byte in the path
            return _NO_SUCH_FILE
        except OSError as e:
            log.debug("%s: %s %r: %s", self.peer, op.__name__, path, e)
            return _status(e)

    wrapper.__name__ = op.__name__
    return wrapper


# ---------------------------------------------------------------------------------------------
# The SFTP side


class _ReadHandle(paramiko.SFTPHandle):  # type: ignore[misc]  # paramiko has no stubs
    """An open bill. pread makes every request stand alone, so pipelined and out-of-order
    reads (prefetch, readv, a resume from an offset) need no shared file position."""

    def __init__(self, fd: int, name: str, peer: str) -> None:
        super().__init__(os.O_RDONLY)
        self._fd: int | None = fd
        self._name = name
        self._peer = peer
        self._sent = 0

    def read(self, offset: int, length: int) -> bytes | int:
        if self._fd is None:
            return _FAILURE
        try:
            data = os.pread(self._fd, min(length, MAX_READ), offset)
        except OSError as e:
            return _status(e)
        self._sent += len(data)
        return data  # b"" at end of file: paramiko answers SFTP_EOF

    def write(self, offset: int, data: bytes) -> int:
        return _DENIED

    def stat(self) -> paramiko.SFTPAttributes | int:
        if self._fd is None:
            return _FAILURE
        return _attributes(os.fstat(self._fd), posixpath.basename(self._name))

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        return _DENIED

    def close(self) -> None:
        # Called on CLOSE and again for handles still open when the session ends.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            log.info("%s: closed %s, %d bytes sent", self._peer, self._name, self._sent)


class _ReadOnlySFTP(paramiko.SFTPServerInterface):  # type: ignore[misc]
    """One SFTP session (paramiko makes one per channel) over the served tree."""

    def __init__(self, server: _SSHServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.tree: _Tree = server.tree
        self.peer: str = server.peer

    def session_started(self) -> None:
        log.info("%s: SFTP session started", self.peer)

    def session_ended(self) -> None:
        log.info("%s: SFTP session ended", self.peer)

    def canonicalize(self, path: str) -> str:
        return _virtual(path)

    @_errors
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes]:
        local = self.tree.local(path)
        log.info("%s: list %s", self.peer, _virtual(path))
        entries = []
        with os.scandir(local) as it:
            for entry in it:
                try:
                    entries.append(_attributes(entry.stat(follow_symlinks=False), entry.name))
                except FileNotFoundError:  # removed while listing
                    continue
        return sorted(entries, key=lambda a: str(a.filename))

    @_errors
    def stat(self, path: str) -> paramiko.SFTPAttributes:
        log.debug("%s: stat %s", self.peer, _virtual(path))
        return _attributes(os.stat(self.tree.local(path)), posixpath.basename(_virtual(path)))

    @_errors
    def lstat(self, path: str) -> paramiko.SFTPAttributes:
        log.debug("%s: lstat %s", self.peer, _virtual(path))
        local = self.tree.local(path, follow=False)
        return _attributes(os.lstat(local), posixpath.basename(_virtual(path)))

    @_errors
    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _ReadHandle | int:
        name = _virtual(path)
        if flags & _WRITE_FLAGS:
            log.warning("%s: refused open for writing %s", self.peer, name)
            return _DENIED
        # O_NONBLOCK so that a FIFO in the tree cannot wedge the session; regular files
        # ignore it.
        fd = os.open(self.tree.local(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            log.info("%s: refused open of %s: not a regular file", self.peer, name)
            return _FAILURE
        log.info("%s: open %s", self.peer, name)
        return _ReadHandle(fd, name, self.peer)

    def _refuse(self, what: str, *paths: str) -> int:
        log.warning("%s: refused %s %s: read-only", self.peer, what, " ".join(paths))
        return _DENIED

    def remove(self, path: str) -> int:
        return self._refuse("remove", path)

    def rename(self, oldpath: str, newpath: str) -> int:
        return self._refuse("rename", oldpath, newpath)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._refuse("rename", oldpath, newpath)

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return self._refuse("mkdir", path)

    def rmdir(self, path: str) -> int:
        return self._refuse("rmdir", path)

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return self._refuse("setstat", path)

    def symlink(self, target_path: str, path: str) -> int:
        return self._refuse("symlink", path)


# ---------------------------------------------------------------------------------------------
# The SSH side


class _SSHServer(paramiko.ServerInterface):  # type: ignore[misc]
    """Authentication and channel policy for one connection: sessions running sftp only."""

    def __init__(
        self,
        tree: _Tree,
        peer: str,
        username: str,
        authorized: frozenset[bytes],
        password: str | None,
    ) -> None:
        self.tree = tree
        self.peer = peer
        self._username = username
        self._authorized = authorized
        self._password = password

    def get_allowed_auths(self, username: str) -> str:
        methods = []
        if self._authorized:
            methods.append("publickey")
        if self._password is not None:
            methods.append("password")
        return ",".join(methods)

    def _verdict(self, username: str, method: str, ok: bool) -> int:
        if ok and username == self._username:
            log.info("%s: %s authenticated by %s", self.peer, username, method)
            return _AUTH_OK
        log.warning("%s: %s auth failed for %r", self.peer, method, username)
        return _AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        ok = self._password is not None and hmac.compare_digest(
            password.encode("utf-8"), self._password.encode("utf-8")
        )
        return self._verdict(username, "password", ok)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        # paramiko verifies the signature itself once we accept the key; the blob names the
        # key type, so comparing blobs compares type and key.
        return self._verdict(username, "publickey", key.asbytes() in self._authorized)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return _OPEN_OK
        log.warning("%s: refused %s channel", self.peer, kind)
        return _OPEN_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        # The default starts whatever the transport registered, which is only "sftp".
        ok: bool = super().check_channel_subsystem_request(channel, name)
        if not ok:
            log.warning("%s: refused subsystem %r", self.peer, name)
        return ok


# ---------------------------------------------------------------------------------------------


class ChannelSimulator:
    """Serves `root` read-only over SFTP on 127.0.0.1 while the `with` block runs.

    Clients log in as `username` with any of `authorized_keys` and/or `password`. Without a
    `host_key`, a fresh Ed25519 one is generated; `SimulatorAddress.host_key_line` is the
    known_hosts line that trusts it.
    """

    def __init__(
        self,
        root: Path,
        *,
        username: str = "recon",
        authorized_keys: list[paramiko.PKey] | None = None,
        password: str | None = None,
        host_key: paramiko.PKey | None = None,
        port: int = 0,
    ) -> None:
        if not root.is_dir():
            raise NotADirectoryError(f"served root is not a directory: {root}")
        if not authorized_keys and password is None:
            raise ValueError("give authorized_keys and/or password, or nobody can log in")
        self._tree = _Tree(root)
        self._username = username
        self._authorized = frozenset(k.asbytes() for k in authorized_keys or [])
        self._password = password
        self._host_key = host_key or generate_ed25519_key()
        self._port = port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        # Written to on exit to wake the acceptor's select(): closing a socket that another
        # thread waits on does not reliably wake it.
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: set[threading.Thread] = set()
        self._transports: set[paramiko.Transport] = set()
        self._pending: dict[Path, threading.Timer] = {}  # staged copy -> timer that lands it

    @property
    def root(self) -> Path:
        return self._tree.root

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SimulatorAddress:
        if self._listener is not None or self._stop.is_set():
            raise RuntimeError("a ChannelSimulator can be started only once")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((HOST, self._port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._wake = socket.socketpair()
        port: int = listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop,
            args=(listener, self._wake[0]),
            name=f"sftp-simulator:{port}",
            daemon=True,
        )
        self._acceptor.start()
        log.info("serving %s read-only on %s:%d", self.root, HOST, port)
        return SimulatorAddress(
            host=HOST,
            port=port,
            username=self._username,
            host_key_line=known_hosts_line(HOST, port, self._host_key),
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        if self._wake is not None:
            self._wake[1].send(b"x")
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_TIMEOUT)
        for sock in [self._listener, *(self._wake or ())]:
            if sock is not None:
                sock.close()
        with self._lock:
            transports = list(self._transports)
            connections = list(self._connections)
            pending = list(self._pending.items())
            self._pending.clear()
        for transport in transports:
            transport.close()
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        # Bills still waiting to "arrive" never do; drop their staged copies.
        for staged, timer in pending:
            timer.cancel()
            staged.unlink(missing_ok=True)
        log.info("stopped serving %s", self.root)

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([listener, wake], [], [])
                if listener not in ready:
                    continue  # woken to stop
                sock, addr = listener.accept()
            except OSError:
                if not self._stop.is_set():
                    log.exception("accept failed; no longer listening")
                return
            peer = f"{addr[0]}:{addr[1]}"
            thread = threading.Thread(
                target=self._serve, args=(sock, peer), name=f"sftp-simulator {peer}", daemon=True
            )
            with self._lock:
                self._connections.add(thread)
            thread.start()

    def _serve(self, sock: socket.socket, peer: str) -> None:
        log.info("%s: connected", peer)
        # Without this, Nagle's algorithm holds the tail of each reply until the client's
        # delayed ACK (~40 ms on Linux): every synchronous read would then take 40 ms. That
        # hits paramiko clients hard, whose prefetch can give up early against a fast server
        # and fall back to one read at a time.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        with self._lock:
            self._transports.add(transport)
        try:
            transport.add_server_key(self._host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _ReadOnlySFTP)
            server = _SSHServer(self._tree, peer, self._username, self._authorized, self._password)
            if self._stop.is_set():  # arrived while __exit__ was closing the others
                return
            transport.start_server(server=server)  # returns after key exchange
            # Each channel runs its sftp subsystem on a thread of its own; we only hold on to
            # the channels: paramiko keeps them weakly and a collected Channel closes itself.
            # Until accepted they sit in paramiko's (strong) queue, so draining it now and
            # then is enough, and waiting on the stop event lets __exit__ end us at once.
            channels: list[paramiko.Channel] = []
            while transport.is_active() and not self._stop.wait(_POLL):
                channels = [c for c in channels if not c.closed]
                while (channel := transport.accept(timeout=0)) is not None:
                    channels.append(channel)
        except (paramiko.SSHException, EOFError, OSError) as e:
            log.info("%s: connection failed: %s", peer, str(e) or type(e).__name__)
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)
                self._connections.discard(threading.current_thread())
            log.info("%s: disconnected", peer)

    # -- late bills -----------------------------------------------------------------------

    def publish(self, src: Path, name: str, *, after: float = 0.0) -> None:
        """Make `src` appear in the served root as `name` (a relative path), `after` seconds
        from now.

        The copy is made now, under a hidden name beside the root (so no client can see it
        half-written or early), and renamed into place when the time comes: clients see no
        file, then the whole file, never a partial one. Missing directories on the way are
        made now, as on a channel's server, where the merchant's directory is already there.
        """
        rel = PurePosixPath(name)
        if not rel.parts or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"publish: name must be a relative path inside the root: {name!r}")
        if self._stop.is_set():
            raise RuntimeError("publish: the simulator has stopped")
        dest = self.root.joinpath(*rel.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, staged_name = tempfile.mkstemp(
            prefix=f".{self.root.name}.{rel.name}.", suffix=".arriving", dir=self.root.parent
        )
        staged = Path(staged_name)
        try:
            with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
                shutil.copyfileobj(inp, out)
            staged.chmod(0o644)  # mkstemp's 0600 would look odd in a listing
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        if after <= 0:
            self._land(staged, dest)
            return
        timer = threading.Timer(after, self._land_later, args=(staged, dest))
        timer.daemon = True
        with self._lock:
            self._pending[staged] = timer
        timer.start()
        log.info("%s will arrive in %.1f s", "/" + rel.as_posix(), after)

    def _land_later(self, staged: Path, dest: Path) -> None:
        with self._lock:
            if self._pending.pop(staged, None) is None:  # cancelled by __exit__
                return
        try:
            self._land(staged, dest)
        except OSError:  # nobody to raise to on a timer thread
            log.exception("could not publish %s", dest)

    def _land(self, staged: Path, dest: Path) -> None:
        try:
            os.utime(staged)  # mtime = arrival time, as a client polling by mtime would see
            # Same filesystem as the root (its parent), so this is an atomic rename.
            os.replace(staged, dest)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        log.info("published %s", "/" + dest.relative_to(self.root).as_posix())


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.sftp_simulator",
        description="Serve a directory read-only over SFTP on 127.0.0.1, like a channel does.",
    )
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--username", default="recon")
    parser.add_argument(
        "--host-key", type=Path, help="private key file to serve with (default: a fresh Ed25519)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    password = secrets.token_urlsafe(12)  # fresh per run: nothing to leak from the repo
    host_key = paramiko.PKey.from_path(args.host_key) if args.host_key else None
    try:
        simulator = ChannelSimulator(
            args.root, username=args.username, password=password, host_key=host_key, port=args.port
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sftp-simulator-") as tmp, simulator as address:
        known_hosts = address.write_known_hosts(Path(tmp) / "known_hosts")
        print(f"serving   {simulator.root} (read-only)")
        print(f"address   sftp://{address.username}@{address.host}:{address.port}/")
        print(f"password  {password}")
        print(f"host key  {address.host_key_line}")
        print(
            f"try       sftp -P {address.port} -o UserKnownHostsFile={known_hosts} "
            f"{address.username}@{address.host}"
        )
        print("Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
