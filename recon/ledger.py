"""Load the internal ledger export (CSV or Parquet) for one channel-day.

Contract (README): merchant_order_id, merchant_refund_id, txn_type, channel,
channel_txn_id, amount (positive decimal string, major units), currency,
status, created_at (ISO 8601 with offset). One file may hold several channels
and neighbouring days; only the channel's rows whose created_at falls on the
business day in the channel's time zone are kept. Everything is read as text:
ids that look like numbers stay exactly as written.

The export is read in batches, never whole (a CSV in blocks of whole records, a
Parquet file in row batches): each batch's rows of the day go to Parquet parts
under ``work_dir`` in file order, its quarantined rows are kept (they are few),
the rest is counted and dropped. Memory stays flat however big the file.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl

from recon.errors import InputError
from recon.ledger_rows import split
from recon.parts import write_part
from recon.schema import QUARANTINE_SCHEMA
from recon.sides import SIDE_SCHEMA

LEDGER_COLUMNS = (
    "merchant_order_id",
    "merchant_refund_id",
    "txn_type",
    "channel",
    "channel_txn_id",
    "amount",
    "currency",
    "status",
    "created_at",
)


LEDGER_ROW_SCHEMA: dict[str, pl.DataType] = {
    **SIDE_SCHEMA,
    "created_at": pl.Datetime("us", "UTC"),
}

# Batch sizes: a CSV is parsed in blocks of about BLOCK_BYTES of whole records, a
# Parquet file in batches of BATCH_ROWS rows; the day's rows are written in parts
# of at least PART_ROWS rows (fewer in the last one).
BLOCK_BYTES = 8 * 1024 * 1024
BATCH_ROWS = 64 * 1024
PART_ROWS = 256 * 1024
# A record longer than this (a quote that never closes) is not a ledger row.
_MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass
class LedgerDay:
    path: Path
    rows_files: tuple[Path, ...]  # Parquet parts of LEDGER_ROW_SCHEMA, in file order
    n_rows: int
    quarantine: pl.DataFrame
    rows_read: int  # all data rows in the file
    rows_other: int  # rows of other channels or other days

    @property
    def rows(self) -> pl.LazyFrame:
        """The day's rows, read lazily from the parts (collect only what you need)."""
        from recon.parts import scan

        return scan(self.rows_files, LEDGER_ROW_SCHEMA)

    @property
    def rows_channel_day(self) -> int:
        return self.n_rows + self.quarantine.height


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _cannot_read(path: Path, exc: Exception) -> InputError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return InputError(path, f"cannot read ledger: {first}")


def _ledger_names(path: Path, columns: list[str]) -> dict[str, str]:
    """Ledger column -> the file's own column name; the header is checked here."""
    names = [c.strip().lstrip("\ufeff").lower() for c in columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(path, f"ledger header repeats column(s) {', '.join(twice)}", line=1)
    missing = [c for c in LEDGER_COLUMNS if c not in names]
    if missing:
        raise InputError(
            path, f"ledger header lacks column(s) {', '.join(missing)}", line=1, column=missing[0]
        )
    original = dict(zip(names, columns, strict=True))
    return {c: original[c] for c in LEDGER_COLUMNS}


class Batch(NamedTuple):
    raw: pl.DataFrame  # the text columns of LEDGER_COLUMNS
    share: float  # of the export read once this batch is (0 to 1)


def read_ledger_batches(
    path: Path, *, block_bytes: int = BLOCK_BYTES, batch_rows: int = BATCH_ROWS
) -> Iterator[Batch]:
    """The raw export in batches, in file order.

    The header (or the Parquet schema) is read and checked before this returns: a
    missing or unreadable file, or a header that lacks or repeats a column, is an
    InputError at once; a bad data row is one when its batch is read."""
    if not path.is_file():
        raise InputError(path, "cannot read ledger: no such file")
    if _is_parquet(path):
        return _parquet_batches(path, batch_rows)
    return _csv_batches(path, block_bytes)


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[Batch]:
    try:
        scan = pl.scan_parquet(path)
        names = _ledger_names(path, scan.collect_schema().names())
        total = int(scan.select(pl.len()).collect().item())  # from the file's metadata
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _cannot_read(path, exc) from None
    text = scan.select(pl.col(names[c]).cast(pl.String).alias(c) for c in LEDGER_COLUMNS)

    def batches() -> Iterator[Batch]:
        done = 0
        try:
            for frame in text.collect_batches(chunk_size=batch_rows, engine="streaming"):
                done += frame.height
                yield Batch(frame, done / total if total else 1.0)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _cannot_read(path, exc) from None

    return batches()


def _read_csv(path: Path, data: bytes) -> pl.DataFrame:
    """Parse CSV bytes (a header line first) exactly as the whole file would be."""
    try:
        return pl.read_csv(data, infer_schema=False, encoding="utf8", truncate_ragged_lines=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _cannot_read(path, exc) from None


def _csv_batches(path: Path, block_bytes: int) -> Iterator[Batch]:
    """Blocks of whole records, each parsed behind the header line: a record ends at a
    newline outside quotes, so a block never splits a quoted field with a line break."""
    with path.open("rb") as f:
        buf = f.read(block_bytes)
        while (cut := _first_record_end(buf)) == 0 and len(buf) < _MAX_RECORD_BYTES:
            more = f.read(block_bytes)
            if not more:
                break
            buf += more
    header = buf[:cut] if cut else buf
    names = _ledger_names(path, _read_csv(path, header).columns)
    return _csv_blocks(path, header, len(header), names, block_bytes)


def _csv_blocks(
    path: Path, header: bytes, start: int, names: dict[str, str], block_bytes: int
) -> Iterator[Batch]:
    if not header.endswith(b"\n"):
        return  # a header without a line end is the whole file: no rows
    head, rows = len(header), 0
    with path.open("rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        at, size = start, block_bytes
        while True:
            # The header goes in front of every block, so that each parses as the file would.
            data = bytearray(head + size)
            data[:head] = header
            f.seek(at)
            got = f.readinto(memoryview(data)[head:])
            if got == 0:
                return
            if got < size:  # the rest of the file
                del data[head + got :]
                after = None
            elif (cut := _last_record_end(data, head)) >= 0:
                del data[cut:]
                after = at + cut - head
            elif size < _MAX_RECORD_BYTES:
                size *= 2  # a record longer than a block: read more at once
                continue
            else:
                raise InputError(
                    path,
                    f"cannot read ledger: no end of record in {size >> 20} MiB "
                    "(a quote that never closes?)",
                    line=rows + 2,
                )
            frame = _csv_frame(path, bytes(data), names)
            del data
            rows += frame.height
            yield Batch(frame, 1.0 if after is None else after / file_size)
            if after is None:
                return
            at, size = after, block_bytes


def _csv_frame(path: Path, data: bytes, names: dict[str, str]) -> pl.DataFrame:
    return _read_csv(path, data).select(pl.col(names[c]).alias(c) for c in LEDGER_COLUMNS)


def _first_record_end(buf: bytes) -> int:
    """Index just past the first newline outside quotes; 0 when there is none."""
    quotes, pos = 0, 0
    while (nl := buf.find(b"\n", pos)) >= 0:
        quotes += buf.count(b'"', pos, nl)
        if quotes % 2 == 0:
            return nl + 1
        pos = nl + 1
    return 0


def _last_record_end(buf: bytearray, start: int) -> int:
    """Index just past the last newline of ``buf[start:]`` outside quotes; -1 when there is
    none. ``buf[start:]`` begins at the start of a record (outside quotes)."""
    quotes_after, end = 0, len(buf)
    total = buf.count(b'"', start)
    while (nl := buf.rfind(b"\n", start, end)) >= 0:
        quotes_after += buf.count(b'"', nl, end)
        if (total - quotes_after) % 2 == 0:
            return nl + 1
        end = nl
    return -1


def _prefetched(batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, each read by a helper thread while the one before is processed
    (polars releases the GIL while it parses)."""
    with ThreadPoolExecutor(1, thread_name_prefix="ledger-read") as pool:
        ahead = pool.submit(next, batches, None)
        while (batch := ahead.result()) is not None:
            ahead = pool.submit(next, batches, None)
            yield batch


class LoadStopped(Exception):
    """The load was stopped by its caller (the run failed elsewhere): no parts are left."""


@dataclass(frozen=True)
class LoadProgress:
    """How far a ledger load has got, reported after each batch."""

    rows_read: int
    for_day: int  # of those, the channel's rows of the day
    quarantined: int
    share: float  # of the export read (0 to 1)


class _PartWriter:
    """Writes the day's rows as ordered parts of at least ``part_rows`` rows, each by a
    helper thread while the next batch is processed."""

    def __init__(self, directory: Path, part_rows: int) -> None:
        self.directory = directory
        self.part_rows = part_rows
        self.files: list[Path] = []
        self.n_rows = 0  # added so far, written or pending
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-write")
        self._writing: list[Future[Path]] = []

    def add(self, rows: pl.DataFrame) -> None:
        self.n_rows += rows.height
        if rows.height:
            self._pending.append(rows)
            self._pending_rows += rows.height
        if self._pending_rows >= self.part_rows:
            self._flush()

    def close(self) -> tuple[Path, ...]:
        """Waits for the writes; always leaves at least one part (maybe empty)."""
        if self._pending or not self.files:
            self._flush()
        self._pool.shutdown()
        for done in self._writing:
            done.result()
        return tuple(self.files)

    def abandon(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _flush(self) -> None:
        for done in [w for w in self._writing if w.done()]:
            done.result()  # a failed write fails the load now
        frame = (
            pl.concat(self._pending, rechunk=False)
            if self._pending
            else pl.DataFrame(schema=LEDGER_ROW_SCHEMA)
        )
        path = self.directory / f"ledger-{len(self.files):05d}.parquet"
        self._writing.append(self._pool.submit(write_part, frame, path))
        self.files.append(path)
        self._pending, self._pending_rows = [], 0


def load_ledger_day(
    path: Path,
    channel: str,
    tz: str,
    day: dt.date,
    work_dir: Path,
    *,
    block_bytes: int = BLOCK_BYTES,
    batch_rows: int = BATCH_ROWS,
    part_rows: int = PART_ROWS,
    stop: threading.Event | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
) -> LedgerDay:
    """The channel's rows of ``day`` (in ``tz``) from the export at ``path``.

    The rows go to Parquet parts in a fresh directory under ``work_dir`` (file order,
    at least one part, maybe empty); the quarantined rows stay in memory, by line.
    Once ``stop`` is set, the load ends at its next batch with LoadStopped; ``progress``
    is told how far it has got after each batch."""
    batches = read_ledger_batches(path, block_bytes=block_bytes, batch_rows=batch_rows)
    work_dir.mkdir(parents=True, exist_ok=True)
    parts = _PartWriter(Path(tempfile.mkdtemp(prefix="ledger-", dir=work_dir)), part_rows)
    quarantined: list[pl.DataFrame] = []
    rows_read = rows_other = n_quarantined = 0
    # CSV: header is line 1, so data row n is line n+1; Parquet has rows only.
    line_offset = 0 if _is_parquet(path) else 1
    try:
        for raw, share in _prefetched(batches):
            if stop is not None and stop.is_set():
                raise LoadStopped(f"{path}: load stopped after {rows_read} rows")
            batch = split(raw, rows_read + 1, str(path), line_offset, channel, tz, day)
            parts.add(batch.rows)
            if batch.quarantine.height:
                quarantined.append(batch.quarantine)
            rows_read += raw.height
            rows_other += batch.other
            n_quarantined += batch.quarantine.height
            if progress is not None:
                progress(LoadProgress(rows_read, parts.n_rows, n_quarantined, share))
        files = parts.close()
    except BaseException:
        parts.abandon()
        raise
    quarantine = pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *quarantined])
    return LedgerDay(
        path=path,
        rows_files=files,
        n_rows=parts.n_rows,
        quarantine=quarantine.sort("source_line"),
        rows_read=rows_read,
        rows_other=rows_other,
    )
