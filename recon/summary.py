"""summary.json: what was read, matched and quarantined; count and amount per queue."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from parsers import ParsedBill
from recon.ledger import LedgerDay
from recon.money import format_minor
from recon.queues import Queues


def amounts_by_currency(df: pl.DataFrame, column: str = "amount_minor") -> dict[str, str]:
    if df.height == 0:
        return {}
    sums = df.group_by("currency").agg(pl.col(column).sum()).sort("currency")
    return {c: format_minor(int(v), c) for c, v in sums.iter_rows()}


def settlement(bill: ParsedBill) -> dict[str, dict[str, str]]:
    """Per currency: gross payments, refunds, fees and what the merchant nets; the bill's own
    summary totals have already been checked against the same rows (control totals)."""
    amount, kind = pl.col("amount_minor"), pl.col("txn_type")
    sums = (
        bill.rows.group_by("currency")
        .agg(
            amount.filter(kind == "payment").sum().alias("pay"),
            amount.filter(kind == "refund").sum().alias("ref"),
            pl.col("fee_minor").sum().alias("fee"),
        )
        .sort("currency")
        .collect(engine="streaming")
    )
    out: dict[str, dict[str, str]] = {}
    for currency, pay, ref, fee in sums.iter_rows():
        c = str(currency)
        out[c] = {
            "gross": format_minor(int(pay), c),
            "refunds": format_minor(int(ref), c),
            "fees": format_minor(int(fee), c),
            "net": format_minor(int(pay) - int(ref) - int(fee), c),
        }
    return out


def rows_on_other_days(bill: ParsedBill, day: dt.date) -> int:
    """Bill rows whose own business date is not the day (trades across midnight)."""
    n = bill.rows.filter(pl.col("business_date") != day).select(pl.len())
    return int(n.collect(engine="streaming").item())


def build_summary(
    channel: str,
    day: dt.date,
    bill: ParsedBill,
    ledger: LedgerDay,
    counts: dict[str, int],
    queues: Queues,
    files: dict[str, str],
) -> dict[str, Any]:
    fm = queues.field_mismatch
    pairs = fm.unique(["txn_type", "merchant_order_id", "merchant_refund_id", "bill_line"])
    amount_rows = fm.filter(pl.col("field") == "amount")
    return {
        "channel": channel,
        "business_date": day.isoformat(),
        "bill": {
            "file": files["bill_file"],
            "sha256": files["bill_sha256"],
            "layout": bill.layout,
            "rows_read": bill.rows_read,
            "rows_parsed": bill.n_rows,
            "rows_quarantined": bill.quarantine.height,
            "rows_on_other_days": rows_on_other_days(bill, day),
            "control_totals": [
                {"name": t.name, "bill": str(t.expected), "rows": str(t.actual)}
                for t in bill.totals
            ],
        },
        "ledger": {
            "file": files["ledger_file"],
            "sha256": files["ledger_sha256"],
            "rows_read": ledger.rows_read,
            "rows_other_channels_or_days": ledger.rows_other,
            "rows_parsed": ledger.n_rows,
            "rows_quarantined": ledger.quarantine.height,
        },
        "settlement": settlement(bill),
        "rows_read": bill.rows_read + ledger.rows_read,
        "matched": counts["matched"],
        "matched_with_differences": pairs.height,
        "quarantined": bill.quarantine.height + ledger.quarantine.height,
        "ledger_unsettled": queues.ledger_unsettled.height,
        "queues": {
            "local_missing": {
                "count": queues.local_missing.height,
                "amount": amounts_by_currency(queues.local_missing),
            },
            "channel_missing": {
                "count": queues.channel_missing.height,
                "amount": amounts_by_currency(queues.channel_missing),
            },
            "field_mismatch": {
                "count": fm.height,
                "pairs": pairs.height,
                "amount": amounts_by_currency(pairs),
                "by_field": dict(sorted(fm.group_by("field").len().iter_rows())),
                "amount_rows": amount_rows.height,
            },
        },
    }
