"""Alerts: a channel-day needs a person. Logged at ERROR and kept in the store.

Delivery beyond that (mail, chat) hangs off the log or the ``alerts`` table, or
off the Airflow failure callback that calls :func:`raise_alert`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from recon.store import open_store

log = logging.getLogger("recon.alerts")


def raise_alert(store: Path, channel: str, day: dt.date, kind: str, message: str) -> None:
    log.error("ALERT %s %s %s: %s", kind, channel, day, message)
    with open_store(store) as con:
        con.execute(
            "INSERT INTO alerts VALUES (?, ?, ?, ?, ?)",
            [dt.datetime.now(dt.UTC), channel, day, kind, message],
        )


def alerts_for(store: Path, channel: str, day: dt.date) -> list[tuple[str, str]]:
    with open_store(store) as con:
        rows = con.execute(
            "SELECT kind, message FROM alerts WHERE channel = ? AND business_date = ? "
            "ORDER BY raised_at",
            [channel, day],
        ).fetchall()
    return [(str(k), str(m)) for k, m in rows]
