"""The one interface every channel-format parser implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Protocol

import polars as pl

from recon.errors import ControlTotalsError, InputError


@dataclass(frozen=True)
class ParseProgress:
    """How far a parse has got, reported after each chunk (in file order)."""

    lines: int  # data lines read so far (rows parsed + rows quarantined)
    quarantined: int
    bytes_read: int  # of the bill's (decompressed) text
    share: float | None  # of the bill's file read, 0 to 1 (None: cannot tell)


@dataclass(frozen=True)
class ParseContext:
    """What a parser needs to know about the channel, taken from rules/."""

    channel: str
    timezone: str
    status_map: Mapping[str, str] = field(default_factory=dict)
    default_currency: str = "CNY"
    check_totals: bool = True
    # Where the standard rows are written as Parquet parts (a fresh temporary
    # directory when None); big bills never sit in memory whole.
    work_dir: Path | None = None
    workers: int = 0  # processes for big bills; 0 = one per core
    chunk_bytes: int = 0  # bytes of whole lines parsed at a time; 0 = parsers.chunked's default
    # Called in the parsing process after each chunk; never sent to worker processes.
    progress: Callable[[ParseProgress], None] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass(frozen=True)
class TotalCheck:
    """One control total: the bill's own figure against the sum of its rows."""

    name: str
    expected: Decimal
    actual: Decimal

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass
class ParsedBill:
    path: Path
    layout: str
    rows_files: tuple[Path, ...]  # Parquet parts of recon.schema.StandardBill, in bill order
    n_rows: int  # rows in those parts
    quarantine: pl.DataFrame  # recon.schema.QUARANTINE_SCHEMA
    rows_read: int  # data rows in the file, header and summary lines excluded
    totals: list[TotalCheck]
    summary_line: int | None = None  # where the bill's own totals are

    @property
    def rows(self) -> pl.LazyFrame:
        """The standard rows, read lazily from the parts (collect only what you need)."""
        from recon.parts import scan
        from recon.schema import POLARS_SCHEMA

        return scan(self.rows_files, POLARS_SCHEMA)

    def check_conservation(self) -> None:
        """Rows read = rows parsed + rows quarantined, or the parser lost something."""
        if self.rows_read != self.n_rows + self.quarantine.height:
            raise InputError(
                self.path,
                f"row conservation broken: read {self.rows_read}, parsed {self.n_rows}, "
                f"quarantined {self.quarantine.height}",
            )

    def check_totals(self) -> None:
        bad = [t for t in self.totals if not t.ok]
        if bad:
            figures = "; ".join(
                f"{t.name}: bill says {t.expected}, rows sum to {t.actual}" for t in bad
            )
            raise ControlTotalsError(
                self.path,
                f"control totals do not match, bill rejected: {figures}",
                self.summary_line,
            )


class BillParser(Protocol):
    name: ClassVar[str]

    def parse(self, path: Path, ctx: ParseContext) -> ParsedBill: ...
