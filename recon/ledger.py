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
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recon.checks import RowCheck, apply_checks
from recon.currency import CURRENCY_EXPONENTS
from recon.errors import InputError
from recon.money import exponent_expr, to_minor_by_currency
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
_ISO_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?[+-]\d{2}:\d{2}$"


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


def read_ledger_batches(
    path: Path, *, block_bytes: int = BLOCK_BYTES, batch_rows: int = BATCH_ROWS
) -> Iterator[pl.DataFrame]:
    """The raw export in batches, in file order: the text columns of LEDGER_COLUMNS.

    The header (or the Parquet schema) is read and checked before this returns: a
    missing or unreadable file, or a header that lacks or repeats a column, is an
    InputError at once; a bad data row is one when its batch is read."""
    if not path.is_file():
        raise InputError(path, "cannot read ledger: no such file")
    if _is_parquet(path):
        return _parquet_batches(path, batch_rows)
    return _csv_batches(path, block_bytes)


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    try:
        scan = pl.scan_parquet(path)
        names = _ledger_names(path, scan.collect_schema().names())
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _cannot_read(path, exc) from None
    text = scan.select(pl.col(names[c]).cast(pl.String).alias(c) for c in LEDGER_COLUMNS)

    def batches() -> Iterator[pl.DataFrame]:
        try:
            yield from text.collect_batches(chunk_size=batch_rows, engine="streaming")
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _cannot_read(path, exc) from None

    return batches()


def _read_csv(path: Path, data: bytes) -> pl.DataFrame:
    """Parse CSV bytes (a header line first) exactly as the whole file would be."""
    try:
        return pl.read_csv(data, infer_schema=False, encoding="utf8", truncate_ragged_lines=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _cannot_read(path, exc) from None


def _csv_batches(path: Path, block_bytes: int) -> Iterator[pl.DataFrame]:
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
) -> Iterator[pl.DataFrame]:
    if not header.endswith(b"\n"):
        return  # a header without a line end is the whole file: no rows
    head, rows = len(header), 0
    with path.open("rb") as f:
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
            yield frame
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


def _normalised_created_at(col: pl.Expr) -> pl.Expr:
    """Bring the ISO 8601 variants (Z, +08, +0800, space, no seconds) to one form.

    Values already in that form stay as they are and ``...Z`` becomes ``...+00:00``
    without the regex chain, which runs only for the other spellings."""
    return col.map_batches(_normalised_series, return_dtype=pl.String, is_elementwise=True)


# Exactly what _exact_normalised makes of them: kept, and Z -> +00:00.
_ISO_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"


def _normalised_series(s: pl.Series) -> pl.Series:
    frame = s.cast(pl.String).rename("v").to_frame()
    v = pl.col("v")
    kinds = frame.select(
        v.str.contains(_ISO_OFFSET).fill_null(False).alias("iso"),
        v.str.contains(_ISO_Z).fill_null(False).alias("z"),
    )
    iso, z = kinds.get_column("iso"), kinds.get_column("z")
    if iso.all():
        return s
    out = frame.select(pl.when(z).then(v.str.head(-1) + pl.lit("+00:00")).otherwise(v)).to_series()
    others = (~(iso | z)).arg_true()
    if others.len():
        out = out.scatter(others, frame[others].select(_exact_normalised(v)).to_series())
    return out.rename(s.name)


def _exact_normalised(col: pl.Expr) -> pl.Expr:
    """The reference normalisation behind :func:`_normalised_created_at`."""
    s = col.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
    s = s.str.replace(r"(?i)z$", "+00:00").str.replace(r"([+-]\d{2})$", "${1}:00")
    s = s.str.replace(r"([+-]\d{2})(\d{2})$", "${1}:${2}")
    return s.str.replace(r"T(\d{2}:\d{2})([+-])", "T${1}:00${2}")


# The side columns a row brings itself (origin_file / origin_line are added).
_STAGED = [c for c in SIDE_SCHEMA if c not in ("origin_file", "origin_line")]

# The channel-day's rows are quarantined by the first check that fails.
_CHECKS = [
    RowCheck(
        "created_at",
        pl.col("created_at").is_null(),
        pl.format("created_at '{}' is not ISO 8601 with a UTC offset", pl.col("created_at_raw")),
    ),
    RowCheck("merchant_order_id", pl.col("merchant_order_id") == "", "merchant_order_id is empty"),
    RowCheck(
        "txn_type",
        ~pl.col("txn_type").is_in(["payment", "refund"]),
        pl.format("txn_type '{}' is not payment or refund", pl.col("txn_type")),
    ),
    RowCheck(
        "merchant_refund_id",
        (pl.col("txn_type") == "refund") & (pl.col("merchant_refund_id") == ""),
        "refund without merchant_refund_id",
    ),
    RowCheck(
        "currency",
        ~pl.col("currency").is_in(list(CURRENCY_EXPONENTS)),
        pl.format("unknown currency '{}'", pl.col("currency")),
    ),
    RowCheck(
        "amount",
        pl.col("amount_minor").is_null(),
        pl.format(
            "amount '{}' is not an exact {} amount", pl.col("amount_raw"), pl.col("currency")
        ),
    ),
    RowCheck(
        "amount",
        pl.col("amount_minor") < 0,
        pl.format("amount '{}' must be positive", pl.col("amount_raw")),
    ),
    RowCheck("status", pl.col("status") == "", "status is empty"),
]


@dataclass
class _Split:
    """One batch sorted out: the day's good rows, its quarantined rows, and the rest."""

    rows: pl.DataFrame  # LEDGER_ROW_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA, in file order
    other: int  # rows of other channels or other days


def _split(
    raw: pl.DataFrame, first_row: int, path: Path, channel: str, tz: str, day: dt.date
) -> _Split:
    """Sort one batch of the raw export whose first row is data row ``first_row``."""
    # One chunk per column: polars 2.1 can panic in pl.format over a filtered frame of
    # many chunks (seen on a 400k-row read_csv); a batch is small, so this is cheap.
    raw = raw.rechunk()
    created = pl.col("_iso").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    # Lazily, so that only the rows of the channel-day are ever copied.
    staged = (
        raw.lazy()
        .with_row_index("ledger_row", offset=first_row)
        .with_columns(pl.col("channel").str.strip_chars().str.to_lowercase().fill_null(""))
        .filter(pl.col("channel") == channel)
        .with_columns(pl.col("created_at").fill_null("").alias("created_at_raw"))
        .with_columns(_normalised_created_at(pl.col("created_at_raw")).alias("_iso"))
        .with_columns(
            pl.when(pl.col("_iso").str.contains(_ISO_OFFSET)).then(created).alias("created_at")
        )
        # No valid created_at: quarantined today. A valid one of another day: not ours.
        .filter(
            pl.col("created_at").is_null()
            | (pl.col("created_at").dt.convert_time_zone(tz).dt.date() == day)
        )
        .with_columns(
            *(
                pl.col(c).fill_null("").str.strip_chars()
                for c in ("merchant_order_id", "merchant_refund_id", "channel_txn_id")
            ),
            pl.col("txn_type").fill_null("").str.strip_chars().str.to_lowercase(),
            pl.col("currency").fill_null("").str.strip_chars().str.to_uppercase(),
            pl.col("status").fill_null("").str.strip_chars().str.to_uppercase(),
            pl.col("amount").fill_null("").alias("amount_raw"),
        )
        .with_columns(
            to_minor_by_currency(pl.col("amount_raw"), pl.col("currency")).alias("amount_minor"),
            exponent_expr(pl.col("currency")).alias("exponent"),
        )
        .select(*_STAGED, "created_at", "created_at_raw", "amount_raw", "ledger_row")
        .collect()
    )
    good, flagged = apply_checks(staged, _CHECKS)
    # CSV: header is line 1, so data row n is line n+1; Parquet has rows only.
    offset = 0 if _is_parquet(path) else 1
    rows = good.select(
        *(pl.col(c).cast(SIDE_SCHEMA[c]) for c in _STAGED),
        pl.lit(str(path)).alias("origin_file"),
        pl.col("ledger_row").cast(pl.Int64).alias("origin_line"),
        pl.col("created_at"),
    )
    return _Split(
        rows=rows,
        quarantine=_quarantined(flagged, path, offset),
        other=raw.height - staged.height,
    )


def _quarantined(bad: pl.DataFrame, path: Path, line_offset: int) -> pl.DataFrame:
    return bad.select(
        pl.lit(str(path)).alias("source_file"),
        (pl.col("ledger_row") + line_offset).cast(pl.Int64).alias("source_line"),
        pl.col("_q_col").alias("column"),
        pl.col("_q_why").alias("reason"),
        pl.lit(None, pl.String).alias("raw"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _prefetched(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """``batches``, each read by a helper thread while the one before is processed
    (polars releases the GIL while it parses)."""
    with ThreadPoolExecutor(1, thread_name_prefix="ledger-read") as pool:
        ahead = pool.submit(next, batches, None)
        while (batch := ahead.result()) is not None:
            ahead = pool.submit(next, batches, None)
            yield batch


class _PartWriter:
    """Writes the day's rows as ordered parts of at least ``part_rows`` rows, each by a
    helper thread while the next batch is processed."""

    def __init__(self, directory: Path, part_rows: int) -> None:
        self.directory = directory
        self.part_rows = part_rows
        self.files: list[Path] = []
        self.n_rows = 0
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-write")
        self._writing: list[Future[Path]] = []

    def add(self, rows: pl.DataFrame) -> None:
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
        self.n_rows += frame.height
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
) -> LedgerDay:
    """The channel's rows of ``day`` (in ``tz``) from the export at ``path``.

    The rows go to Parquet parts in a fresh directory under ``work_dir`` (file order,
    at least one part, maybe empty); the quarantined rows stay in memory, by line."""
    batches = read_ledger_batches(path, block_bytes=block_bytes, batch_rows=batch_rows)
    work_dir.mkdir(parents=True, exist_ok=True)
    parts = _PartWriter(Path(tempfile.mkdtemp(prefix="ledger-", dir=work_dir)), part_rows)
    quarantined: list[pl.DataFrame] = []
    rows_read = rows_other = 0
    try:
        for raw in _prefetched(batches):
            split = _split(raw, rows_read + 1, path, channel, tz, day)
            parts.add(split.rows)
            if split.quarantine.height:
                quarantined.append(split.quarantine)
            rows_read += raw.height
            rows_other += split.other
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
