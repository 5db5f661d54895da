"""The break lifecycle (差错处理) in the store, updated by every run of a channel-day.

Identity: (channel, txn_type, merchant_order_id, merchant_refund_id, kind, field,
occurrence). A re-run updates the day's breaks, never duplicates them, never
reopens a closed one, and auto-resolves the ones the re-run no longer finds.
Timing differences resolve themselves: an item missing on one side that shows
up on the other side in a later day's run closes both, with the later file as
evidence; a pending item not matched within timing_days becomes open.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import polars as pl

from parsers.base import ParsedBill
from recon import bill_history as history
from recon import candidates as cand
from recon.audit import SYSTEM
from recon.currency import CURRENCY_EXPONENTS
from recon.duck import one_row
from recon.engine import DiffResult
from recon.ledger import LedgerDay
from recon.queues import Queues
from recon.requery import ChannelQuery
from recon.rules import Channel
from recon.store import CLOSED_STATES

IDENTITY = "channel, txn_type, merchant_order_id, merchant_refund_id, kind, field, occurrence"
_IDENTITY_ORDER = ", ".join(f"{c} NULLS FIRST" for c in IDENTITY.split(", "))


def _same_identity(left: str, right: str) -> str:
    """SQL: the two aliases name the same break (every identity column equal)."""
    cols = [c.strip() for c in IDENTITY.split(",")]
    return (
        f"({', '.join(f'{left}.{c}' for c in cols)}) = ({', '.join(f'{right}.{c}' for c in cols)})"
    )


_CLOSED = "('" + "', '".join(CLOSED_STATES) + "')"


@dataclass
class BreakUpdate:
    new: int
    seen_again: int
    timing_matched: int
    stale_resolved: int
    pending_opened: int
    open_total: int
    pending_total: int

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def classify(
    con: duckdb.DuckDBPyConnection,
    channel: Channel,
    day: dt.date,
    bill: ParsedBill,
    ledger: LedgerDay,
    result: DiffResult,
    queues: Queues,
) -> pl.DataFrame:
    """Today's candidates. The day's rows are only scanned (filters, small aggregates) and
    the store's history is only queried for the keys at stake: nothing whole is loaded."""
    min_fee = 0
    if channel.fees is not None:
        exp = CURRENCY_EXPONENTS.get(channel.currency, 2)
        min_fee = int(channel.fees.min_fee.scaleb(exp))
    local_missing = result.outcome("local_missing")
    days = channel.breaks.history_days
    with history.looked_up(con, channel.name, day, days, bill, local_missing):
        billed_before = history.billed_before(con)
        refunds_over = history.refunds_over_payments(con, bill)
    frames = [
        cand.local_missing(result, bill.rows, billed_before, channel, day),
        cand.channel_missing(result, ledger.rows, channel, day),
        cand.field_mismatch(queues),
        cand.fee_mismatch(bill.rows, channel.fees, min_fee),
        cand.refund_exceeds_payment(refunds_over),
    ]
    return cand.mark_partial_refunds(pl.concat(frames), bill.rows)


def _requery(found: pl.DataFrame, channel: str, requery: ChannelQuery | None) -> pl.DataFrame:
    """Ask the channel about missing items before they are raised; record the answers."""
    base = found.with_columns(
        pl.lit(None, pl.String).alias("requery_status"),
        pl.lit(None, pl.String).alias("requery_note"),
    )
    if requery is None or found.height == 0:
        return base
    asked = base.filter(pl.col("kind").is_in(["local_missing", "channel_missing"]))
    answers = []
    for t, o, r in asked.select(cand.KEY).unique().iter_rows():  # few rows: the day's breaks
        a = requery.query(channel, t, o, r)
        if a is not None:
            answers.append((t, o, r, a.status, a.note, a.reason_code if a.explains else ""))
    if not answers:
        return base
    got = pl.DataFrame(answers, schema=[*cand.KEY, "_status", "_note", "_code"], orient="row")
    return (
        base.join(got, on=cand.KEY, how="left")
        .with_columns(
            pl.coalesce("_status", "requery_status").alias("requery_status"),
            pl.coalesce("_note", "requery_note").alias("requery_note"),
            pl.when(pl.col("_code").fill_null("") != "")
            .then(pl.col("_code"))
            .otherwise(pl.col("reason_code"))
            .alias("reason_code"),
        )
        .drop("_status", "_note", "_code")
    )


_TIMING_SQL = """
-- A missing item of an earlier day that shows up on the other side today: both sides
-- exist after all (a timing difference). Close the earlier break with today's file as
-- evidence; today's counterpart is not raised.
CREATE OR REPLACE TEMP TABLE _timing AS
SELECT b.break_id, c.txn_type, c.merchant_order_id, c.merchant_refund_id, c.kind AS today_kind,
       CASE WHEN c.kind = 'local_missing'
            THEN 'bill ' || c.bill_file || ':' || c.bill_line
            ELSE 'ledger ' || c.ledger_file || ' row ' || c.ledger_row END AS evidence
FROM _cand c
JOIN break_items b
  ON b.channel = $channel AND b.txn_type = c.txn_type
 AND b.merchant_order_id = c.merchant_order_id AND b.merchant_refund_id = c.merchant_refund_id
 AND b.amount_minor = c.amount_minor AND b.currency = c.currency
 AND b.business_date < $day AND b.state IN ('open', 'pending_timing')
 AND ((c.kind = 'local_missing' AND b.kind = 'channel_missing')
   OR (c.kind = 'channel_missing' AND b.kind = 'local_missing'))
QUALIFY row_number() OVER (PARTITION BY b.break_id ORDER BY c.bill_line, c.ledger_row) = 1
"""


def _close(
    con: duckdb.DuckDBPyConnection,
    table: str,
    state: str,
    action: str,
    note_sql: str,
    now: dt.datetime,
) -> int:
    """Close the breaks listed in ``table`` (break_id, evidence?) and audit each change."""
    con.execute(
        f"INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state, note) "
        f"SELECT ?, ?, b.break_id, ?, b.state, ?, {note_sql} FROM break_items b JOIN {table} t "
        f"USING (break_id)",
        [now, SYSTEM, action, state],
    )
    n = one_row(con.execute(f"SELECT count(*) FROM {table}"))
    con.execute(
        f"UPDATE break_items SET state = ?, updated_at = ?, resolution = {note_sql}, "
        f"evidence = coalesce(t.evidence, break_items.evidence) FROM {table} t "
        f"WHERE break_items.break_id = t.break_id",
        [state, now],
    )
    return int(n[0]) if n else 0


def update_breaks(
    con: duckdb.DuckDBPyConnection,
    channel: Channel,
    day: dt.date,
    bill: ParsedBill,
    ledger: LedgerDay,
    result: DiffResult,
    queues: Queues,
    files: Mapping[str, str | None],
    requery: ChannelQuery | None = None,
) -> BreakUpdate:
    now = dt.datetime.now(dt.UTC)
    params = {"channel": channel.name, "day": day}
    found = classify(con, channel, day, bill, ledger, result, queues)
    history.store_day(con, channel.name, day, bill, channel.breaks.history_days)
    con.register("_cand_frame", found)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _cand AS SELECT $channel AS channel, * FROM _cand_frame",
        {"channel": channel.name},
    )
    con.unregister("_cand_frame")

    con.execute(_TIMING_SQL, params)
    found_on = f"'timing difference: found on the other side on {day} (' || t.evidence || ')'"
    timing = _close(con, "_timing", "auto_resolved", "timing_match", found_on, now)
    con.execute(
        "DELETE FROM _cand c USING _timing t WHERE c.txn_type = t.txn_type "
        "AND c.merchant_order_id = t.merchant_order_id "
        "AND c.merchant_refund_id = t.merchant_refund_id AND c.kind = t.today_kind"
    )
    remaining = con.sql("SELECT * EXCLUDE (channel) FROM _cand").pl()
    remaining = _requery(remaining, channel.name, requery)
    con.register("_cand_frame", remaining)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _cand AS SELECT $channel AS channel, * FROM _cand_frame",
        {"channel": channel.name},
    )
    con.unregister("_cand_frame")

    # Seen again (a re-run, or the same break on a later day): refresh, never reopen.
    seen = one_row(
        con.execute(
            f"""
        UPDATE break_items SET
          last_seen = greatest(last_seen, $day),
          amount_minor = CASE WHEN break_items.state IN {_CLOSED} THEN break_items.amount_minor ELSE c.amount_minor END,
          amount = CASE WHEN break_items.state IN {_CLOSED} THEN break_items.amount ELSE c.amount END,
          ledger_value = CASE WHEN break_items.state IN {_CLOSED} THEN break_items.ledger_value ELSE c.ledger_value END,
          channel_value = CASE WHEN break_items.state IN {_CLOSED} THEN break_items.channel_value ELSE c.channel_value END,
          bill_file = coalesce(c.bill_file, break_items.bill_file),
          bill_line = coalesce(c.bill_line, break_items.bill_line),
          ledger_file = coalesce(c.ledger_file, break_items.ledger_file),
          ledger_row = coalesce(c.ledger_row, break_items.ledger_row),
          updated_at = $now
        FROM _cand c
        WHERE {_same_identity("break_items", "c")}
        """,
            {"day": day, "now": now},
        )
    )
    # New breaks, each with its 'detected' entry in the audit log (set-based: a day may
    # raise many).
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _new AS SELECT * FROM _cand c
        WHERE NOT EXISTS (SELECT 1 FROM break_items b WHERE {_same_identity("b", "c")})"""
    )
    # Numbered in identity order from a block taken off the sequence at once, so the
    # same inputs give the same break ids whatever order the diff found them in.
    last_id, n_new = one_row(
        con.execute("SELECT max(nextval('break_seq')), count(*) FROM _new")
    ) or (None, 0)
    con.execute(
        f"""
        INSERT INTO break_items (break_id, {IDENTITY}, business_date, state, reason_code,
          amount_minor, currency, amount, ledger_value, channel_value, channel_txn_id,
          first_seen, last_seen, bill_file, bill_sha256, bill_line, ledger_file,
          ledger_sha256, ledger_row, requery_status, requery_note, updated_at)
        SELECT $first + row_number() OVER (ORDER BY {_IDENTITY_ORDER}) - 1,
          {IDENTITY}, $day, state, reason_code, amount_minor, currency, amount,
          ledger_value, channel_value, channel_txn_id, $day, $day,
          bill_file, CASE WHEN bill_file IS NULL THEN NULL ELSE $bill_sha END, bill_line,
          ledger_file, CASE WHEN ledger_file IS NULL THEN NULL ELSE $ledger_sha END, ledger_row,
          requery_status, requery_note, $now
        FROM _new
        """,
        {
            "first": (last_id or 0) - n_new + 1,
            "day": day,
            "now": now,
            "bill_sha": files.get("bill_sha256"),
            "ledger_sha": files.get("ledger_sha256"),
        },
    )
    new = one_row(
        con.execute(
            f"""
        INSERT INTO audit_log (logged_at, actor, break_id, action, from_state, to_state, note)
        SELECT $now, $actor, b.break_id, 'detected', NULL, b.state,
          $found || CASE WHEN b.reason_code <> '' THEN '; ' || b.reason_code ELSE '' END
          || CASE WHEN coalesce(b.requery_status, '') = '' THEN ''
                  ELSE '; channel re-query says ' || b.requery_status
                       || CASE WHEN coalesce(b.requery_note, '') = '' THEN ''
                               ELSE ' (' || b.requery_note || ')' END END
        FROM break_items b JOIN _new c ON {_same_identity("b", "c")}
        ORDER BY b.break_id
        """,
            {"now": now, "actor": SYSTEM, "found": f"found in the {channel.name} run of {day}"},
        )
    )

    # Found on this day before, not any more: the re-run's inputs no longer show it.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _stale AS
        SELECT b.break_id, NULL AS evidence FROM break_items b
        WHERE b.channel = $channel AND b.business_date = $day AND b.state IN ('open', 'pending_timing')
          AND NOT EXISTS (SELECT 1 FROM _cand c WHERE
            {_same_identity("b", "c")})""",
        params,
    )
    stale = _close(con, "_stale", "auto_resolved", "not_found_on_rerun",
                   f"'not found when {day} was reconciled again'", now)  # fmt: skip

    # Pending items whose T+N bills have all been seen without a match: now a person's.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _aged AS
        SELECT break_id, NULL AS evidence FROM break_items
        WHERE channel = $channel AND state = 'pending_timing'
          AND business_date + CAST($days AS INTEGER) <= $day""",
        {**params, "days": channel.breaks.timing_days},
    )
    aged = _close(con, "_aged", "open", "timing_window_passed",
                  f"'no match within {channel.breaks.timing_days} following bill(s)'", now)  # fmt: skip
    totals = dict(
        con.execute(
            "SELECT state, count(*) FROM break_items WHERE channel = ? GROUP BY ALL", [channel.name]
        ).fetchall()
    )
    return BreakUpdate(
        new=int(new[0]) if new else 0,
        seen_again=int(seen[0]) if seen else 0,
        timing_matched=timing,
        stale_resolved=stale,
        pending_opened=aged,
        open_total=int(totals.get("open", 0)),
        pending_total=int(totals.get("pending_timing", 0)),
    )
