"""Progress of long runs, in the log (the CLI's -v, Airflow task logs).

Each stage logs its start and its duration. Inside the long stages (the bill parse, the
ledger load, DuckDB's work) a line every EVERY_S seconds says how far it has got, so a
100M-row day is not minutes of silence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import duckdb

from parsers.base import ParseProgress
from recon.ledger import LoadProgress

log = logging.getLogger("recon.progress")

EVERY_S = 5.0  # between two progress lines of one stage


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Logs the stage's start and, when it ends, its duration."""
    started = time.perf_counter()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - started)


class Ticker:
    """Says a line is due at most once every ``every`` seconds, the first after ``every``:
    a stage that ends sooner needs no progress line."""

    def __init__(
        self, every: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every = EVERY_S if every is None else every
        self._clock = clock
        self._next = clock() + self._every

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._every
        return True


def parse_progress(what: str, ticker: Ticker | None = None) -> Callable[[ParseProgress], None]:
    """A ParseContext.progress that logs, now and then, the rows read and the bytes."""
    tick = ticker or Ticker()

    def report(p: ParseProgress) -> None:
        if not tick.due():
            return
        read = f"{p.bytes_read / 1e6:,.1f} MB read"
        if p.share is not None:
            read += f" ({100 * p.share:.0f}% of the file)"
        log.info(
            "%s: %s rows read (%s quarantined), %s",
            what,
            f"{p.lines:,}",
            f"{p.quarantined:,}",
            read,
        )

    return report


def load_progress(what: str, ticker: Ticker | None = None) -> Callable[[LoadProgress], None]:
    """A load_ledger_day progress that logs, now and then, the rows read so far."""
    tick = ticker or Ticker()

    def report(p: LoadProgress) -> None:
        if tick.due():
            log.info(
                "%s: %s rows read (%.0f%% of the file), %s of them the day's, %s quarantined",
                what, f"{p.rows_read:,}", 100 * p.share, f"{p.for_day:,}", f"{p.quarantined:,}",
            )  # fmt: skip

    return report


@contextmanager
def duck_progress(
    con: duckdb.DuckDBPyConnection, what: str, every: float | None = None
) -> Iterator[None]:
    """While the block runs, logs DuckDB's own estimate of its running query's progress
    every ``every`` seconds (from a thread: query_progress may be asked meanwhile)."""
    # Tracked only with the progress bar on; it is never printed.
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    done = threading.Event()
    interval = max(EVERY_S if every is None else every, 0.01)  # never a busy loop

    def watch() -> None:
        while not done.wait(interval):
            try:
                pct = con.query_progress()
            except duckdb.Error:  # the connection is closing: the block has ended
                return
            if pct >= 0:
                log.info("%s: %.0f%% of DuckDB's current query", what, pct)

    watcher = threading.Thread(target=watch, name="duck-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
