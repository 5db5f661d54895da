"""Big bills in bounded memory: whole lines in chunks, parsed side by side.

A bill is read as a byte stream (plain, gunzipped or a zip entry) in chunks of whole
lines. Each chunk is decoded, split and checked on its own, and its standard rows
go to a Parquet part; only quarantined rows, counts and exact partial sums come
back. A chunk knows the physical line number it starts at, so every row keeps its
true line. Small bills (one chunk) are parsed in the calling process; bigger ones
in a pool of processes, a few chunks in flight at a time, results in file order.
"""

from __future__ import annotations

import codecs
import concurrent.futures as cf
import contextlib
import io
import multiprocessing
import os
import shutil
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Protocol, TypeVar, cast

import polars as pl

from parsers.base import ParseContext, ParseProgress
from parsers.common import GZIP_MAGIC, decode
from parsers.gunzip import GunzipStream
from recon.errors import InputError
from recon.schema import empty_quarantine

# Lines per chunk follow from this: about 115,000 WeChat lines. A chunk expands to
# several times its size while parsed, times the chunks in flight. Just under 32 MiB,
# glibc's largest mmap threshold: a chunk's bytes then reuse freed heap memory instead
# of fresh pages that fault in one by one.
CHUNK_BYTES = 31 << 20

T = TypeVar("T")
R = TypeVar("R")


def open_stream(path: Path) -> IO[bytes]:
    """The file's bytes as a stream, gunzipped when gzip; unreadable is an InputError."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from None
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return cast(IO[bytes], GunzipStream(raw))
    raw.seek(0)
    return raw


@dataclass(frozen=True)
class Chunk:
    index: int
    first_line: int  # physical line number of the chunk's first line
    data: bytes  # whole lines; only the file's last chunk may end without a newline
    last: bool
    offset: int = 0  # where the lines start in the (decompressed) stream
    # Set when the lines were left in this plain file (``data`` empty), to be read
    # there by the worker instead of being copied to it through a pipe.
    file: Path | None = None
    size: int = 0  # bytes at ``offset`` in ``file`` (at its start when ``spooled``)
    # ``file`` holds only these lines, written there from a compressed stream (see
    # iter_chunks): read from its start, then deleted.
    spooled: bool = False

    @property
    def end(self) -> int:
        """Where the chunk's lines end in the stream."""
        return self.offset + (self.size if self.file is not None else len(self.data))


def in_file(stream: IO[bytes]) -> bool:
    """Whether the stream's offsets are those of a plain file (not gunzipped, unzipped)."""
    return isinstance(stream, io.BufferedReader)


def detached(chunk: Chunk, file: Path) -> Chunk:
    """The chunk without its bytes, which the worker reads from ``file`` itself."""
    return replace(chunk, data=b"", file=file, size=len(chunk.data))


def payload(chunk: Chunk) -> bytes:
    """The chunk's bytes, read from its file when it was detached or spooled (a spooled
    chunk's file is deleted: its bytes are read once)."""
    if chunk.file is None:
        return chunk.data
    with chunk.file.open("rb") as f:
        if not chunk.spooled:
            f.seek(chunk.offset)
        data = f.read(chunk.size)
    if chunk.spooled:
        chunk.file.unlink(missing_ok=True)
    if len(data) != chunk.size:
        raise InputError(chunk.file, "file changed while being read", line=chunk.first_line)
    return data


_STREAM_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)


def iter_chunks(
    path: Path | str,
    stream: IO[bytes],
    size: int = CHUNK_BYTES,
    first_line: int = 1,
    *,
    errors: tuple[type[BaseException], ...] = _STREAM_ERRORS,
    what: str = "corrupt or truncated compressed data",
    file: Path | None = None,
    spool: Path | None = None,
) -> Iterator[Chunk]:
    """Whole lines, at most ``size`` bytes at a time (more only when a line is longer
    than that: up to the last line end within ``size`` bytes after it). '\\n' never
    occurs inside a UTF-8, GBK or GB18030 character, so cutting at it never splits one.

    With ``file`` (the plain file ``stream`` reads, see in_file), the chunks after the
    first come detached: the parent only finds the cuts and counts the lines, and each
    worker reads its lines from the file. Copying every chunk's bytes out of the buffer
    was a sixth of the parent's CPU, on the cores the workers need.

    With ``spool`` (a folder; for a gunzipped or unzipped stream, which has no file of its
    own), the chunks after the first are written there, a file each, and come spooled:
    the worker reads and deletes the file. Sending the bytes through the pool's pipe
    instead cost the parent and the workers about four times as much CPU (pickling,
    copying through the pipe in 64 KiB pieces, unpickling).

    The stream is read into one buffer, reused: a fresh block per read, joined to the
    previous block's tail and then cut, cost three new allocations per chunk, whose page
    faults took more CPU (in the kernel) than the reading itself.
    """
    size = max(size, 1)
    buf = bytearray(size)
    have, index, line, at, ended = 0, 0, first_line, 0, False

    def chunk_of(n: int, *, last: bool) -> Chunk:
        """The buffer's first ``n`` bytes as the next chunk, detached after the first."""
        if file is not None and index > 0:
            return Chunk(index, line, b"", last, offset=at, file=file, size=n)
        with memoryview(buf) as view:
            if spool is not None and index > 0:
                target = spool / f"chunk-{index:06d}"
                with target.open("wb") as f:
                    f.write(view[:n])
                return Chunk(index, line, b"", last, at, target, n, spooled=True)
            return Chunk(index, line, bytes(view[:n]), last, offset=at)

    while not ended:
        # Up to ``size`` in all; past it (a line longer than that), ``size`` more.
        want = size - have if have < size else size
        if have + want > len(buf):
            buf.extend(bytes(have + want - len(buf)))
        try:
            with memoryview(buf) as view:
                got = stream.readinto(view[have : have + want])  # type: ignore[attr-defined]
        except errors as exc:
            raise InputError(path, f"{what}: {exc}") from None
        have += got
        ended = not got
        if have < size and not ended:  # a short read: fill the buffer first
            continue
        cut = buf.rfind(b"\n", 0, have) + 1
        if cut == 0:  # no line end yet: keep reading
            continue
        chunk = chunk_of(cut, last=False)
        line += buf.count(b"\n", 0, cut)
        buf[: have - cut] = buf[cut:have]
        have -= cut
        # The final chunk is the one with nothing after it; peek by reading on first.
        yield chunk
        at += cut
        index += 1
    if have or index == 0:
        yield chunk_of(have, last=True)


def lines_of(
    path: Path | str, chunk: Chunk, encodings: tuple[str, ...] = ("utf-8-sig", "gb18030")
) -> tuple[pl.DataFrame, str]:
    """(``line``/``text`` frame of the chunk's physical lines, encoding used).

    The encoding is ``ascii`` for pure-ASCII chunks (every candidate reads them alike).
    A chunk ending in a newline has no line after it; the file's last chunk keeps the
    empty line a trailing newline leaves, as reading the file whole does.
    """
    frame, used = _decoded_lines(Path(path), payload(chunk), chunk.first_line, encodings)
    if not chunk.last and frame.height:
        frame = frame.head(frame.height - 1)  # the empty piece after the final newline
    return frame, used


def _decoded_lines(
    path: Path, data: bytes, first_line: int, encodings: tuple[str, ...]
) -> tuple[pl.DataFrame, str]:
    """UTF-8 is checked, not decoded: polars validates it as strictly as Python's codec
    and keeps the bytes as they are; other encodings go through Python's codec."""
    for enc in ("ascii",) if data.isascii() else encodings:
        if enc in ("ascii", "utf-8", "utf-8-sig"):
            bom = enc == "utf-8-sig" and data.startswith(codecs.BOM_UTF8)
            try:
                return _split(data[len(codecs.BOM_UTF8) :] if bom else data, first_line), enc
            except pl.exceptions.ComputeError:
                continue
        try:
            return _split(data.decode(enc).encode("utf-8"), first_line), enc
        except UnicodeDecodeError:
            continue
    decode(path, data, encodings)  # raises the usual InputError
    raise AssertionError("unreachable")


def _split(utf8: bytes, first_line: int) -> pl.DataFrame:
    text = pl.Series("text", [utf8], dtype=pl.Binary).cast(pl.String)
    s = text.str.split("\n").explode()
    df = pl.DataFrame(s).with_columns(pl.col("text").str.strip_suffix("\r"))
    return df.with_row_index("line", offset=first_line).with_columns(pl.col("line").cast(pl.Int64))


def check_encodings(path: Path | str, used: Iterable[tuple[int, str]]) -> None:
    """One file, one encoding: a chunk read as GB18030 after one read as UTF-8 (or the
    other way) means a mixed file, whose text cannot be trusted."""
    seen: dict[str, int] = {}
    for line, enc in used:
        if enc == "ascii":
            continue
        key = "utf-8" if enc.startswith("utf-8") else enc
        seen.setdefault(key, line)
        if len(seen) > 1:
            (a, la), (b, lb) = list(seen.items())[:2]
            raise InputError(
                path, f"mixed encodings: {a} from line {la}, {b} from line {lb}", line=lb
            )


def prepend(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest


class ChunkDone(Protocol):
    """What every parser's worker reports of its chunk."""

    @property
    def part(self) -> Path: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def data_lines(self) -> int: ...
    @property
    def quarantine(self) -> pl.DataFrame: ...
    @property
    def encoding(self) -> str: ...
    @property
    def first_line(self) -> int: ...


@dataclass(frozen=True)
class Gathered:
    """The chunks' results put together, in file order."""

    rows_files: tuple[Path, ...]
    n_rows: int
    quarantine: pl.DataFrame
    rows_read: int


def gather(source: Path | str, done: Sequence[ChunkDone]) -> Gathered:
    """One encoding for the whole file; parts, counts and quarantine in file order."""
    check_encodings(source, [(d.first_line, d.encoding) for d in done])
    quarantine = [d.quarantine for d in done if d.quarantine.height]
    return Gathered(
        rows_files=tuple(d.part for d in done),
        n_rows=sum(d.n_rows for d in done),
        quarantine=pl.concat(quarantine) if quarantine else empty_quarantine(),
        rows_read=sum(d.data_lines for d in done),
    )


@contextlib.contextmanager
def spool_folder(stream: IO[bytes]) -> Iterator[Path | None]:
    """Where iter_chunks spools a gunzipped or unzipped stream's chunks for the workers
    (None for a plain file, which they read themselves): a folder in the machine's
    temporary folder, removed after the parse with any chunk files a failed one left
    unread. Not in the parse's work folder: in a deployment that is shared storage (NFS),
    and only this machine's workers read the chunks, a few at a time."""
    if in_file(stream):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="recon-chunks-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def work_dir(given: Path | None) -> Path:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        return given
    return Path(tempfile.mkdtemp(prefix="recon-bill-"))


def default_workers(requested: int) -> int:
    return requested if requested > 0 else max(1, min(4, os.cpu_count() or 1))


# polars' allocator (jemalloc) hands freed pages back to the kernel within a second, so a
# worker parsing chunk after chunk faults its pages in again and again (about a third
# of its CPU time). Keeping them costs no more than the worker's peak, which the chunk
# size bounds. polars appends this variable to its own settings, so ours win.
_WORKER_ENV = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}


@contextlib.contextmanager
def _worker_env() -> Iterator[None]:
    """The workers' environment, set while they are spawned (inside the pool's block)."""
    saved = {k: os.environ.get(k) for k in _WORKER_ENV}
    os.environ.update(_WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_ordered(
    fn: Callable[[T], R], tasks: Iterable[T], workers: int, in_flight: int | None = None
) -> Iterator[R]:
    """``map(fn, tasks)`` in order; in a process pool when there is more than one task.

    At most ``in_flight`` tasks (default: workers + 1) are submitted ahead of the one
    being waited for, so the chunks held in memory stay few whatever the file size.
    """
    it = iter(tasks)
    first = next(it, None)
    if first is None:
        return
    second = next(it, None)
    if second is None or workers <= 1:
        yield fn(first)
        if second is not None:
            yield fn(second)
            yield from map(fn, it)
        return
    limit = in_flight or workers + 1
    # spawn, not fork: polars and DuckDB run threads, which fork would copy half-alive.
    ctx = multiprocessing.get_context("spawn")
    with _worker_env(), cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque[cf.Future[R]] = deque()
        for task in (first, second):
            pending.append(pool.submit(fn, task))
        for task in it:
            while len(pending) >= limit:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, task))
        try:
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


class HasChunk(Protocol):
    @property
    def chunk(self) -> Chunk: ...


TC = TypeVar("TC", bound=HasChunk)
DC = TypeVar("DC", bound=ChunkDone)


def share_read(stream: IO[bytes], text_size: int | None = None) -> Callable[[int], float] | None:
    """How much of the bill's file a parse has read once its text is read up to a given
    offset: from the text's size (a plain file's own; a zip entry's, ``text_size``), or
    from where the compressed file is read up to (gzip, whose text size is not known
    ahead). None when neither is known."""
    if text_size is None and in_file(stream):
        text_size = os.fstat(stream.fileno()).st_size
    if text_size is not None:
        size = text_size
        return lambda end: end / size if size else 1.0
    raw = stream.fileobj if isinstance(stream, GunzipStream) else None
    if raw is None:
        return None
    raw_size = os.fstat(raw.fileno()).st_size
    return lambda _end: raw.tell() / raw_size if raw_size else 1.0


def run_reported(
    fn: Callable[[TC], DC],
    tasks: Iterable[TC],
    ctx: ParseContext,
    share: Callable[[int], float] | None,
    ends_data: Callable[[DC], bool] | None = None,
) -> Iterator[DC]:
    """run_ordered over chunk tasks with ``ctx.workers``, telling ``ctx.progress`` after
    each chunk how far the parse has got (``share``: see share_read). The lines of chunks
    after one that ``ends_data`` (the parser drops what they parsed) are not counted."""
    workers, progress = default_workers(ctx.workers), ctx.progress
    if progress is None:
        yield from run_ordered(fn, tasks, workers)
        return
    ends: deque[int] = deque()  # of the tasks handed out and not yet done, in order

    def noted(given: Iterable[TC]) -> Iterator[TC]:
        for task in given:
            ends.append(task.chunk.end)
            yield task

    lines = quarantined = 0
    ended = False
    for done in run_ordered(fn, noted(tasks), workers):
        if not ended:
            lines += done.data_lines
            quarantined += done.quarantine.height
            ended = ends_data is not None and ends_data(done)
        end = ends.popleft()
        progress(ParseProgress(lines, quarantined, end, None if share is None else share(end)))
        yield done
