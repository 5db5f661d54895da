"""Raw bill archive: every distinct content a channel delivered, kept forever, never overwritten.

Layout under the archive root::

    <channel>/<YYYY-MM-DD>/<filename>          version 1
    <channel>/<YYYY-MM-DD>/v<N>/<filename>     version N >= 2 (changed content, same name)
    <channel>/<YYYY-MM-DD>/manifest.jsonl      one JSON object per stored version
    .tmp/                                      part files being downloaded

Files reach their place by os.replace from .tmp (same filesystem), so a reader never sees
half a bill; the manifest is rewritten the same way. A per-day directory lock (flock)
serialises writers, so two runs cannot claim the same version number.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
TMP_DIR = ".tmp"
_VERSION_DIR = re.compile(r"v\d+")
_CHANNEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ArchivedBill:
    path: Path
    sha256: str
    size: int
    version: int
    is_new: bool  # False when this content was already the archived version
    source: str  # remote path it came from
    fetched_at: str  # UTC ISO 8601
    remote_mtime: int | None = None  # seconds since the epoch, as the server reported


def sha256_of(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class Archive:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / TMP_DIR

    def day_dir(self, channel: str, business_date: dt.date) -> Path:
        _check_channel(channel)
        return self.root / channel / business_date.isoformat()

    def new_part(self, channel: str, business_date: dt.date, filename: str) -> Path:
        """A new empty part file in the archive's tmp dir (same filesystem as the archive)."""
        _check_channel(channel)
        _check_filename(filename)
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f"{channel}.{business_date.isoformat()}.{filename}.",
            suffix=".part",
            dir=self.tmp,
        )
        os.close(fd)
        return Path(name)

    def versions(self, channel: str, business_date: dt.date, filename: str) -> list[ArchivedBill]:
        day = self.day_dir(channel, business_date)
        return [
            _bill(day, r, is_new=False)
            for r in _read_manifest(day / MANIFEST)
            if r["filename"] == filename
        ]

    def latest(self, channel: str, business_date: dt.date, filename: str) -> ArchivedBill | None:
        found = self.versions(channel, business_date, filename)
        return max(found, key=lambda b: b.version) if found else None

    def store(
        self,
        channel: str,
        business_date: dt.date,
        filename: str,
        part_file: Path,
        *,
        source: str = "",
        remote_mtime: int | None = None,
    ) -> ArchivedBill:
        """Move a complete part file into the archive; the part file is consumed either way.

        Same content as the latest version: the part is dropped and that version returned.
        A content that differs from the latest becomes a new version, even if an older
        version had it (A, B, A again: the channel went back to A, and latest() must say so).
        """
        _check_filename(filename)
        day = self.day_dir(channel, business_date)
        part = self._on_archive_fs(Path(part_file), channel, business_date, filename)
        try:
            digest, size = sha256_of(part)
            day.mkdir(parents=True, exist_ok=True)
            with _locked(day):
                records = _read_manifest(day / MANIFEST)
                mine = [r for r in records if r["filename"] == filename]
                if mine:
                    last = max(mine, key=lambda r: int(r["version"]))
                    if last["sha256"] == digest:
                        return _bill(day, last, is_new=False)
                version = 1 + max((int(r["version"]) for r in mine), default=0)
                # A file nobody recorded (crash between move and manifest) is left alone.
                while (day / _relative(version, filename)).exists():
                    version += 1
                target = day / _relative(version, filename)
                target.parent.mkdir(exist_ok=True)
                _fsync_file(part)
                part.chmod(0o444)  # archived bills are evidence: read-only
                os.replace(part, target)
                _fsync_dir(target.parent)
                record = {
                    "filename": filename,
                    "version": version,
                    "path": _relative(version, filename),
                    "sha256": digest,
                    "size": size,
                    "source": source,
                    "remote_mtime": remote_mtime,
                    "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
                _write_manifest(day / MANIFEST, [*records, record], self.tmp)
                return _bill(day, record, is_new=True)
        finally:
            part.unlink(missing_ok=True)

    def _on_archive_fs(
        self, part: Path, channel: str, business_date: dt.date, filename: str
    ) -> Path:
        """The part file itself, or a copy in tmp when it lives on another filesystem."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        if part.stat().st_dev == self.tmp.stat().st_dev:
            return part
        copy = self.new_part(channel, business_date, filename)
        shutil.copyfile(part, copy)
        part.unlink()
        return copy


def _relative(version: int, filename: str) -> str:
    return filename if version == 1 else f"v{version}/{filename}"


def _bill(day: Path, record: dict[str, Any], *, is_new: bool) -> ArchivedBill:
    return ArchivedBill(
        path=day / record["path"],
        sha256=record["sha256"],
        size=int(record["size"]),
        version=int(record["version"]),
        is_new=is_new,
        source=record["source"],
        fetched_at=record["fetched_at"],
        remote_mtime=record.get("remote_mtime"),
    )


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _write_manifest(path: Path, records: list[dict[str, Any]], tmp_dir: Path) -> None:
    fd, name = tempfile.mkstemp(prefix="manifest.", suffix=".part", dir=tmp_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
        _fsync_dir(path.parent)
    finally:
        Path(name).unlink(missing_ok=True)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the lock


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _check_channel(channel: str) -> None:
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"channel name not usable as a directory: {channel!r}")


def _check_filename(filename: str) -> None:
    if (
        not filename
        or "/" in filename
        or "\0" in filename
        or filename.startswith(".")
        or filename == MANIFEST
        or _VERSION_DIR.fullmatch(filename)
    ):
        raise ValueError(f"file name not usable in the archive: {filename!r}")
