"""The analyst's side of break handling (差错处理): find breaks, read one, act on it.

Every action runs in one transaction and goes through recon.audit, so the audit log
gets exactly one appended row per action and is never rewritten.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zipfile
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from parsers.common import GZIP_MAGIC, zip_entry_name
from recon.audit import log_event, transition
from recon.currency import CURRENCY_EXPONENTS
from recon.duck import one_row
from recon.money import format_minor
from recon.store import BREAK_STATES, CLOSED_STATES

OPEN_STATES = tuple(s for s in BREAK_STATES if s not in CLOSED_STATES)
REOPENABLE = ("resolved", "written_off")  # auto_resolved belongs to the nightly run
# action -> the state it moves the break to (None: the state stays)
ACTIONS: dict[str, str | None] = {
    "resolve": "resolved",
    "write_off": "written_off",
    "reopen": "open",
    "assign": None,
    "comment": None,
}
NEEDS_REASON = ("resolve", "write_off", "reopen")


class BreakError(Exception):
    """A request the store or the break's state does not allow (exit 2, one line)."""


@dataclass(frozen=True)
class BreakFilter:
    channels: tuple[str, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    kinds: tuple[str, ...] = ()
    states: tuple[str, ...] = OPEN_STATES
    min_amount: Decimal | None = None  # major units, compared with |amount_minor|
    min_age: int | None = None  # days since first seen
    assignee: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        terms: list[str] = []
        params: list[Any] = []

        def one_of(column: str, values: tuple[str, ...]) -> None:
            if values:
                terms.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)

        one_of("channel", self.channels)
        one_of("kind", self.kinds)
        one_of("state", self.states)
        for column, op, value in (
            ("business_date", ">=", self.date_from),
            ("business_date", "<=", self.date_to),
            ("age_days", ">=", self.min_age),
            ("assignee", "=", self.assignee),
        ):
            if value is not None:
                terms.append(f"{column} {op} ?")
                params.append(value)
        if self.min_amount is not None:
            sql, more = _min_amount_sql(self.min_amount)
            terms.append(sql)
            params.extend(more)
        return " AND ".join(terms) or "TRUE", params


def _min_amount_sql(amount: Decimal) -> tuple[str, list[Any]]:
    """Exact threshold in each currency's minor units: never a float comparison.

    |minor| / 10**e >= amount  <=>  |minor| >= ceil(amount * 10**e); an unknown
    currency or a missing amount never passes."""
    cases: list[str] = []
    params: list[Any] = []
    for exp in sorted(set(CURRENCY_EXPONENTS.values())):
        codes = sorted(c for c, e in CURRENCY_EXPONENTS.items() if e == exp)
        cases.append(f"WHEN currency IN ({', '.join('?' * len(codes))}) THEN ?")
        params.extend(codes)
        params.append(int(amount.scaleb(exp).to_integral_value(rounding=ROUND_CEILING)))
    return f"abs(amount_minor) >= CASE {' '.join(cases)} END", params


@dataclass(frozen=True)
class Break:
    """One break as listed and exported."""

    break_id: int
    channel: str
    business_date: dt.date
    kind: str
    field: str
    state: str
    reason_code: str
    txn_type: str
    merchant_order_id: str
    merchant_refund_id: str
    amount: str  # major units, exact; '' when unknown
    currency: str
    amount_minor: int | None
    ledger_value: str
    channel_value: str
    age_days: int
    assignee: str


_BREAK_SQL = """
SELECT break_id, channel, business_date, kind, field, state, reason_code, txn_type,
       merchant_order_id, merchant_refund_id, coalesce(amount, ''), coalesce(currency, ''),
       amount_minor,
       coalesce(ledger_value, ''), coalesce(channel_value, ''), age_days, coalesce(assignee, '')
FROM breaks
"""


def list_breaks(con: duckdb.DuckDBPyConnection, flt: BreakFilter) -> list[Break]:
    where, params = flt.where()
    rows = con.execute(f"{_BREAK_SQL} WHERE {where} ORDER BY break_id", params).fetchall()
    return [_with_amount(Break(*row)) for row in rows]


def _with_amount(b: Break) -> Break:
    """The nightly run stores ``amount``; older or hand-made rows may only have minor units."""
    if b.amount or b.amount_minor is None or b.currency not in CURRENCY_EXPONENTS:
        return b
    return replace(b, amount=format_minor(b.amount_minor, b.currency))


# --- one break in full ---------------------------------------------------------------------


def get_break(con: duckdb.DuckDBPyConnection, break_id: int) -> dict[str, Any]:
    """Every column of the ``breaks`` view (timestamps as text: no pytz needed)."""
    types = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'breaks' ORDER BY ordinal_position"
    ).fetchall()
    columns = ", ".join(
        f'CAST("{name}" AS VARCHAR) AS "{name}"' if "TIME ZONE" in kind else f'"{name}"'
        for name, kind in types
    )
    cur = con.execute(f"SELECT {columns} FROM breaks WHERE break_id = ?", [break_id])
    row = one_row(cur)
    if row is None:
        raise BreakError(f"no break {break_id}")
    return dict(zip([d[0] for d in cur.description], row, strict=True))


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    logged_at: str
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    note: str


def audit_history(con: duckdb.DuckDBPyConnection, break_id: int) -> list[AuditEntry]:
    rows = con.execute(
        "SELECT seq, CAST(logged_at AS VARCHAR), actor, action, from_state, to_state, "
        "coalesce(note, '') FROM audit_log WHERE break_id = ? ORDER BY seq",
        [break_id],
    ).fetchall()
    return [AuditEntry(*r) for r in rows]


@dataclass(frozen=True)
class Comment:
    logged_at: str
    actor: str
    body: str


def comments(con: duckdb.DuckDBPyConnection, break_id: int) -> list[Comment]:
    rows = con.execute(
        "SELECT CAST(logged_at AS VARCHAR), actor, body FROM break_comments "
        "WHERE break_id = ? ORDER BY logged_at",
        [break_id],
    ).fetchall()
    return [Comment(*r) for r in rows]


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    break_id: int
    action: str  # a key of ACTIONS
    reason: str = ""  # the reason, or a comment's text
    assignee: str = ""
    origin: str = ""  # where the request came from (an import's file:line), for auditors


@dataclass(frozen=True)
class Applied:
    break_id: int
    action: str
    from_state: str
    to_state: str
    detail: str


def problem(break_id: int, state: str | None, req: Request) -> str | None:
    """Why ``req`` cannot be applied to a break in ``state`` (None: unknown break)."""
    if req.action not in ACTIONS:
        return f"unknown action {req.action!r} (one of {', '.join(ACTIONS)})"
    if req.action in NEEDS_REASON and not req.reason.strip():
        return f"{req.action} needs a reason"
    if req.action == "comment" and not req.reason.strip():
        return "comment needs a text"
    if req.action == "assign" and not req.assignee.strip():
        return "assign needs an assignee"
    if state is None:
        return None
    if req.action in ("resolve", "write_off") and state in CLOSED_STATES:
        hint = "; reopen it first" if state in REOPENABLE else ""
        return f"break {break_id} is already {state}{hint}"
    if req.action == "reopen" and state not in REOPENABLE:
        return f"break {break_id} is {state}: only resolved or written_off breaks can be reopened"
    return None


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def apply(con: duckdb.DuckDBPyConnection, req: Request, actor: str) -> Applied:
    """Apply one request inside the caller's transaction."""
    row = one_row(
        con.execute(
            "SELECT state, coalesce(assignee, '') FROM break_items WHERE break_id = ?",
            [req.break_id],
        )
    )
    if row is None:
        raise BreakError(f"no break {req.break_id}")
    state, assignee = str(row[0]), str(row[1])
    if why := problem(req.break_id, state, req):
        raise BreakError(why)
    note = req.reason.strip()
    suffix = f" [{req.origin}]" if req.origin else ""
    now = dt.datetime.now(dt.UTC)
    if req.action == "assign":
        new = req.assignee.strip()
        con.execute(
            "UPDATE break_items SET assignee = ?, updated_at = ? WHERE break_id = ?",
            [new, now, req.break_id],
        )
        detail = f"assignee {assignee or '-'} -> {new}"
        log_event(con, req.break_id, actor, "assign", state, state, detail + suffix, at=now)
        return Applied(req.break_id, req.action, state, state, detail)
    if req.action == "comment":
        con.execute(
            "INSERT INTO break_comments (logged_at, actor, break_id, body) VALUES (?, ?, ?, ?)",
            [now, actor, req.break_id, note],
        )
        log_event(con, req.break_id, actor, "comment", state, state, note + suffix, at=now)
        return Applied(req.break_id, req.action, state, state, note)
    to_state = ACTIONS[req.action]
    assert to_state is not None
    closing = to_state in CLOSED_STATES
    transition(
        con, req.break_id, to_state, actor, req.action, note + suffix,
        resolution=note if closing else None,
    )  # fmt: skip
    if not closing:  # a reopened break has no resolution until it is closed again
        con.execute("UPDATE break_items SET resolution = NULL WHERE break_id = ?", [req.break_id])
    return Applied(req.break_id, req.action, state, to_state, note)


def act(con: duckdb.DuckDBPyConnection, req: Request, actor: str) -> Applied:
    """Apply one request in its own transaction."""
    with transaction(con):
        return apply(con, req, actor)


# --- evidence: the raw source lines a break came from ----------------------------------------


class SourceUnavailable(Exception):
    """The source line cannot be shown (file gone, line past the end...)."""


def _lines(spec: str) -> Generator[bytes, None, None]:
    """The lines of a bill as recorded: a file (gzip told by content) or ``archive.zip!entry``."""
    path = Path(spec)
    if path.is_file():
        with path.open("rb") as fh:
            gzipped = fh.read(2) == GZIP_MAGIC
            fh.seek(0)
            if gzipped:
                with gzip.GzipFile(fileobj=fh) as gz:
                    yield from gz
            else:
                yield from fh
        return
    for i, ch in enumerate(spec):  # the archive is the prefix that is a zip file
        if ch == "!" and zipfile.is_zipfile(spec[:i]):
            with zipfile.ZipFile(spec[:i]) as zf:
                entry = spec[i + 1 :]
                for info in zf.infolist():
                    if entry in (zip_entry_name(info), info.filename):
                        with zf.open(info) as member:
                            yield from member
                        return
            raise SourceUnavailable(f"{spec[:i]} has no entry {entry!r}")
    raise SourceUnavailable(f"{spec}: file not found")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace")


def source_line(spec: str, line: int) -> str:
    """Physical line ``line`` (1-based) of a bill or CSV, without its line ending.

    Splitting bytes on LF is safe for GBK/GB18030 too: no multi-byte sequence holds 0x0A."""
    n = 0
    try:
        with closing(_lines(spec)) as lines:
            for n, raw in enumerate(lines, 1):
                if n == line:
                    return _decode(raw.removesuffix(b"\n").removesuffix(b"\r"))
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SourceUnavailable(f"{spec}: cannot read: {exc}") from None
    raise SourceUnavailable(f"{spec} has {n} lines, not {line}")


def ledger_line(path: str, row: int) -> str:
    """Data row ``row`` (1-based, header excluded) of a ledger export: CSV line row + 1."""
    if path.lower().endswith(".parquet"):
        try:
            df = pl.read_parquet(path, n_rows=max(row, 1))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise SourceUnavailable(f"{path}: cannot read: {exc}") from None
        if not 1 <= row <= df.height:
            raise SourceUnavailable(f"{path} has {df.height} rows or fewer, not {row}")
        return ", ".join(f"{k}={v}" for k, v in df.row(row - 1, named=True).items())
    return source_line(path, row + 1)
