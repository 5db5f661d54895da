"""State changes of breaks, each one appended to the audit log (never updated in place)."""

from __future__ import annotations

import datetime as dt

import duckdb

from recon.duck import one_row
from recon.store import BREAK_STATES

SYSTEM = "recon"  # the actor for changes the nightly run makes by itself


def log_event(
    con: duckdb.DuckDBPyConnection,
    break_id: int,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    note: str = "",
    at: dt.datetime | None = None,
) -> None:
    con.execute(
        "INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state, note) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [at or dt.datetime.now(dt.UTC), actor, break_id, action, from_state, to_state, note],
    )


def transition(
    con: duckdb.DuckDBPyConnection,
    break_id: int,
    to_state: str,
    actor: str,
    action: str,
    note: str = "",
    *,
    resolution: str | None = None,
    evidence: str | None = None,
) -> str:
    """Move one break to ``to_state`` and log it; returns the state it was in."""
    if to_state not in BREAK_STATES:
        raise ValueError(f"unknown break state {to_state!r}")
    row = one_row(con.execute("SELECT state FROM break_items WHERE break_id = ?", [break_id]))
    if row is None:
        raise KeyError(f"no break {break_id}")
    from_state = str(row[0])
    con.execute(
        "UPDATE break_items SET state = ?, resolution = coalesce(?, resolution), "
        "evidence = coalesce(?, evidence), updated_at = ? WHERE break_id = ?",
        [to_state, resolution, evidence, dt.datetime.now(dt.UTC), break_id],
    )
    log_event(con, break_id, actor, action, from_state, to_state, note)
    return from_state
