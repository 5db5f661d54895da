"""Fetch one channel-day bill over SFTP into the raw archive, never taking a half-delivered file.

The bill is taken only when complete: its marker file is there ("marker"), or its size and
mtime did not move over `stable_seconds` ("stable_size"). It is downloaded into a part file
in the archive's tmp dir; a dropped connection is resumed from the part file's size on a
new connection, a bounded number of times. Size, an unchanged remote file and, when the
channel publishes one, the checksum sidecar are checked before the archive takes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import posixpath
import re
import stat
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from recon.acquire_config import SftpRules, checksum_algorithm
from recon.archive import Archive, ArchivedBill
from recon.sftp import (
    NETWORK_ERRORS,
    PermanentFetchError,
    SftpEndpoint,
    TransientFetchError,
    classify,
    connect,
)

log = logging.getLogger("recon.acquire")

CHUNK = 128 * 1024
MAX_SIDECAR = 4096


class BillNotReady(TransientFetchError):
    """The bill (or its marker / checksum file) is not there yet, or is still being written."""


class ChecksumMismatch(TransientFetchError):
    """The downloaded bill does not match the channel's checksum file.

    Transient: the channel may have replaced the bill between writing the two files. If it
    persists, the retries run out and the task fails.
    """


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    mtime: int | None


Progress = Callable[[int, int], None]  # (bytes in the part file, total bytes)


def check_ready(
    endpoint: SftpEndpoint,
    rules: SftpRules,
    business_date: dt.date,
    *,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 30.0,
) -> str:
    """One look: the bill's remote path when it is complete (with its checksum file, if the
    channel publishes one). Raises BillNotReady otherwise; nothing is downloaded."""
    with _Session(endpoint, timeout) as session:
        remote = _when_complete(session.sftp(), rules, business_date, sleep)
        _sidecar_digest(session.sftp(), rules, business_date)
    log.info("%s: complete, %d bytes", remote.path, remote.size)
    return remote.path


def fetch_bill(
    endpoint: SftpEndpoint,
    rules: SftpRules,
    channel: str,
    business_date: dt.date,
    archive_root: Path,
    *,
    force: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 30.0,
    max_resumes: int = 3,
    on_progress: Progress | None = None,
) -> ArchivedBill:
    """Download the channel-day bill when complete and archive it.

    Raises BillNotReady while it is not deliverable, TransientFetchError for network
    trouble, HostKeyError / AuthError (PermanentFetchError) when retrying cannot help.
    Without `force`, a bill whose size and mtime match the archived version (and its
    checksum file, if any) is not downloaded again.
    """
    archive = Archive(archive_root)
    name = rules.remote_name(business_date)
    with _Session(endpoint, timeout) as session:
        remote = _when_complete(session.sftp(), rules, business_date, sleep)
        expected = _sidecar_digest(session.sftp(), rules, business_date)
        known = archive.latest(channel, business_date, name)
        if not force and known is not None and _same(known, remote, expected):
            log.info(
                "%s: already archived as version %d, not downloading", remote.path, known.version
            )
            return known

        part = archive.new_part(channel, business_date, name)
        try:
            log.info("%s: downloading %d bytes", remote.path, remote.size)
            started = time.monotonic()
            _download(session, remote, part, sleep, max_resumes, on_progress)
            after = _stat(session.sftp(), remote.path)
            if (after.size, after.mtime) != (remote.size, remote.mtime):
                raise BillNotReady(f"{remote.path}: changed while being downloaded")
            if expected is not None:
                _check_digest(part, remote.path, *expected)
            log.info("%s: downloaded in %.1fs", remote.path, time.monotonic() - started)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    bill = archive.store(
        channel, business_date, name, part, source=remote.path, remote_mtime=remote.mtime
    )
    log.info(
        "%s: %s version %d at %s (sha256 %s)",
        remote.path,
        "archived" if bill.is_new else "same content as archived",
        bill.version,
        bill.path,
        bill.sha256,
    )
    return bill


class _Session:
    """The current SFTP connection; `reconnect()` replaces a dropped one."""

    def __init__(self, endpoint: SftpEndpoint, timeout: float) -> None:
        self._endpoint, self._timeout = endpoint, timeout
        self._stack = ExitStack()
        self._sftp: Any = None

    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self._stack.enter_context(connect(self._endpoint, self._timeout))
        return self._sftp

    def reconnect(self) -> Any:
        self.close()
        return self.sftp()

    def close(self) -> None:
        self._sftp = None
        self._stack.close()

    def __enter__(self) -> _Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _when_complete(
    sftp: Any, rules: SftpRules, day: dt.date, sleep: Callable[[float], None]
) -> RemoteFile:
    name = rules.remote_name(day)
    path = rules.remote_path(day)
    listing = _listdir(sftp, rules.remote_dir)
    if name not in listing:
        raise BillNotReady(f"{path}: not delivered yet")
    if rules.completeness == "marker":
        if rules.marker_name(day) not in listing:
            raise BillNotReady(f"{path}: marker {rules.marker_name(day)} not there yet")
        first = _remote(path, listing[name])
    else:
        first = _remote(path, listing[name])
        if first.size == 0:
            raise BillNotReady(f"{path}: empty, still being written")
        log.debug("%s: %d bytes, looking again in %.1fs", path, first.size, rules.stable_seconds)
        sleep(rules.stable_seconds)
        second = _stat(sftp, path)
        if (second.size, second.mtime) != (first.size, first.mtime):
            raise BillNotReady(
                f"{path}: still being written ({first.size} -> {second.size} bytes "
                f"in {rules.stable_seconds}s)"
            )
    return first


def _listdir(sftp: Any, remote_dir: str) -> dict[str, Any]:
    try:
        return {a.filename: a for a in sftp.listdir_attr(remote_dir)}
    except FileNotFoundError:
        raise TransientFetchError(f"{remote_dir}: remote directory does not exist") from None
    except PermissionError:
        raise PermanentFetchError(f"{remote_dir}: permission denied listing it") from None
    except NETWORK_ERRORS as exc:
        raise classify(exc, f"listing {remote_dir}") from exc


def _stat(sftp: Any, path: str) -> RemoteFile:
    try:
        return _remote(path, sftp.stat(path))
    except FileNotFoundError:
        raise BillNotReady(f"{path}: disappeared") from None
    except NETWORK_ERRORS as exc:
        raise classify(exc, f"stat {path}") from exc


def _remote(path: str, attr: Any) -> RemoteFile:
    if attr.st_mode is not None and not stat.S_ISREG(attr.st_mode):
        raise PermanentFetchError(f"{path}: not a regular file")
    return RemoteFile(path=path, size=int(attr.st_size), mtime=attr.st_mtime)


def _same(known: ArchivedBill, remote: RemoteFile, expected: tuple[str, str] | None) -> bool:
    """Whether the archived version is this remote file (rsync's size + mtime quick check)."""
    if (known.source, known.size, known.remote_mtime) != (remote.path, remote.size, remote.mtime):
        return False
    return expected is None or expected[0] != "sha256" or expected[1] == known.sha256


_HEX = re.compile(r"[0-9a-fA-F]+")


def _sidecar_digest(sftp: Any, rules: SftpRules, day: dt.date) -> tuple[str, str] | None:
    """(algorithm, hex digest) from the checksum file, or None when the channel has none."""
    sidecar = rules.checksum_name(day)
    if sidecar is None or rules.checksum_suffix is None:
        return None
    algorithm = checksum_algorithm(rules.checksum_suffix)
    assert algorithm is not None  # SftpRules.from_table checked it
    path = posixpath.join(rules.remote_dir, sidecar)
    try:
        with sftp.open(path, "rb") as f:
            text = f.read(MAX_SIDECAR).decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise BillNotReady(f"{path}: checksum file not there yet") from None
    except NETWORK_ERRORS as exc:
        raise classify(exc, f"reading {path}") from exc
    # "<hex>  <name>" (sha256sum), "<hex> *<name>" (binary mode) or just "<hex>".
    fields = text.split()
    digest = fields[0].lower() if fields else ""
    wanted = _hash(algorithm).digest_size * 2
    if len(digest) != wanted or not _HEX.fullmatch(digest):
        raise TransientFetchError(f"{path}: expected a {algorithm} digest, got {text[:80]!r}")
    if len(fields) > 1 and fields[1].lstrip("*") != rules.remote_name(day):
        raise ChecksumMismatch(f"{path}: names {fields[1]!r}, not {rules.remote_name(day)!r}")
    return algorithm, digest


def _hash(algorithm: str) -> Any:
    # An integrity check against transfer errors, not a security control (md5 is allowed).
    return hashlib.new(algorithm, usedforsecurity=False)


def _check_digest(part: Path, remote_path: str, algorithm: str, expected: str) -> None:
    h = _hash(algorithm)
    with part.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise ChecksumMismatch(
            f"{remote_path}: {algorithm} of the download is {h.hexdigest()}, "
            f"the checksum file says {expected}"
        )


def _download(
    session: _Session,
    remote: RemoteFile,
    part: Path,
    sleep: Callable[[float], None],
    max_resumes: int,
    on_progress: Progress | None,
) -> None:
    drops = 0
    with part.open("wb") as out:
        while True:
            try:
                sftp = session.sftp() if drops == 0 else session.reconnect()
                _copy(sftp, remote, out, on_progress)
                return
            # Any network error while reading an open file is taken for a lost connection
            # (paramiko may not have noticed yet that its transport is gone). A file error
            # shows up again when the file is reopened on the new connection.
            except (TransientFetchError, *NETWORK_ERRORS) as exc:
                if isinstance(exc, BillNotReady):
                    raise
                drops += 1
                out.flush()
                done = out.tell()
                if drops > max_resumes:
                    raise TransientFetchError(
                        f"{remote.path}: connection lost {drops} times, giving up at byte "
                        f"{done} of {remote.size}: {exc}"
                    ) from exc
                log.warning(
                    "%s: connection lost at byte %d of %d (%s); resuming (%d of %d)",
                    remote.path,
                    done,
                    remote.size,
                    exc,
                    drops,
                    max_resumes,
                )
                sleep(min(2.0 ** (drops - 1), 30.0))


def _copy(sftp: Any, remote: RemoteFile, out: BinaryIO, on_progress: Progress | None) -> None:
    """Append the remote file from out's position up to remote.size."""
    done = out.tell()
    try:
        f = sftp.open(remote.path, "rb")
    except FileNotFoundError:
        raise BillNotReady(f"{remote.path}: disappeared while being downloaded") from None
    except PermissionError:
        raise PermanentFetchError(f"{remote.path}: permission denied") from None
    with f:
        if f.stat().st_size < remote.size:
            raise BillNotReady(f"{remote.path}: shrank while being downloaded")
        f.seek(done)
        # prefetch() queues reads from the current position up to the size it is given:
        # the total size, also when resuming.
        f.prefetch(remote.size)
        while done < remote.size:
            chunk = f.read(min(CHUNK, remote.size - done))
            if not chunk:
                raise BillNotReady(f"{remote.path}: shrank while being downloaded")
            out.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, remote.size)
