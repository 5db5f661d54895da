"""``recon breaks ...``: the analyst's commands over the store's breaks (argparse wiring)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
import unicodedata
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from recon.analyst import (
    OPEN_STATES,
    BreakError,
    BreakFilter,
    Request,
    SourceUnavailable,
    act,
    audit_history,
    comments,
    get_break,
    ledger_line,
    list_breaks,
    source_line,
)
from recon.bulk import ImportRejected, breaks_frame, export_breaks, import_sheet
from recon.excel_safe import neutralise_frame
from recon.money import decimal_or_none
from recon.pipeline import EXIT_CLEAN, EXIT_ERROR
from recon.rules import load_rules
from recon.store import BREAK_STATES, open_store

ACTOR_ENV = "RECON_ACTOR"
# list: (column, heading, right-aligned)
TABLE = (
    ("break_id", "id", True), ("channel", "channel", False), ("business_date", "date", False),
    ("kind", "kind", False), ("field", "field", False), ("state", "state", False),
    ("reason_code", "reason_code", False), ("txn_type", "txn_type", False),
    ("merchant_order_id", "order", False), ("merchant_refund_id", "refund", False),
    ("amount", "amount", True), ("currency", "currency", False), ("age_days", "age", True),
    ("assignee", "assignee", False),
)  # fmt: skip


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _amount(text: str) -> Decimal:
    value = decimal_or_none(text)
    if value is None or value < 0 or value >= 10**15:
        raise argparse.ArgumentTypeError(f"not an amount (e.g. 100 or 12.50): {text!r}")
    return value


def _days(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``breaks`` and its subcommands to the ``recon`` parser (whatever its parser class)."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", type=Path, help="DuckDB store (default: from rules)")
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", help=f"who acts (default: ${ACTOR_ENV} or the OS user)")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--channel", action="append", default=[], help="repeatable")
    filters.add_argument(
        "--from", dest="date_from", type=_date, metavar="DATE", help="business date >="
    )
    filters.add_argument(
        "--to", dest="date_to", type=_date, metavar="DATE", help="business date <="
    )
    filters.add_argument("--kind", action="append", default=[], help="repeatable")
    filters.add_argument(
        "--state",
        action="append",
        choices=BREAK_STATES,
        help=f"repeatable (default: {', '.join(OPEN_STATES)})",
    )
    filters.add_argument(
        "--min-amount", type=_amount, metavar="AMOUNT", help="major units, e.g. 100.00"
    )
    filters.add_argument("--min-age", type=_days, metavar="DAYS", help="days since first seen")
    filters.add_argument("--assignee")

    breaks = sub.add_parser("breaks", help="work the breaks: list, show, act, export, import")
    bsub = breaks.add_subparsers(dest="breaks_command", required=True)
    ls = bsub.add_parser("list", parents=[store, filters], help="list breaks")
    ls.add_argument("--format", choices=("table", "csv", "json"), default="table")
    show = bsub.add_parser("show", parents=[store], help="one break with lineage and history")
    show.add_argument("id", type=int)
    assign = bsub.add_parser("assign", parents=[store, actor], help="assign a break")
    assign.add_argument("id", type=int)
    assign.add_argument("--to", dest="assignee", required=True)
    comment = bsub.add_parser("comment", parents=[store, actor], help="comment on a break")
    comment.add_argument("id", type=int)
    comment.add_argument("--text", required=True)
    for name, what in (
        ("resolve", "resolve a break"),
        ("write-off", "write a break off"),
        ("reopen", "reopen a resolved or written-off break"),
    ):
        p = bsub.add_parser(name, parents=[store, actor], help=what)
        p.add_argument("id", type=int)
        p.add_argument("--reason", required=True)
    export = bsub.add_parser("export", parents=[store, filters], help="breaks to CSV or XLSX")
    export.add_argument("--out", required=True, type=Path, help="FILE.csv or FILE.xlsx")
    imp = bsub.add_parser("import", parents=[store, actor], help="apply an edited export")
    imp.add_argument("file", type=Path, help="FILE.csv or FILE.xlsx")


def run(args: argparse.Namespace) -> int:
    commands = {
        "list": _list, "show": _show, "assign": _act, "comment": _act, "resolve": _act,
        "write-off": _act, "reopen": _act, "export": _export, "import": _import,
    }  # fmt: skip
    try:
        return commands[args.breaks_command](args)
    except BreakError as exc:
        print(f"recon: error: {exc}", file=sys.stderr)
    except ImportRejected as exc:
        print(f"recon: error: {exc}", *exc.lines(), sep="\n", file=sys.stderr)
    return EXIT_ERROR


def _connect(args: argparse.Namespace) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    path: Path = args.store or load_rules(args.rules).store
    if not path.is_file():  # opening would create an empty store and show nothing
        raise BreakError(f"{path}: no store (pass --store, or run `recon run` first)")
    return open_store(path)


def _actor(args: argparse.Namespace) -> str:
    name: str = args.actor or os.environ.get(ACTOR_ENV) or ""
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = ""
    if not name.strip():
        raise BreakError(f"who is acting? pass --actor or set {ACTOR_ENV}")
    return name.strip()


def _filter(args: argparse.Namespace) -> BreakFilter:
    return BreakFilter(
        channels=tuple(args.channel),
        date_from=args.date_from,
        date_to=args.date_to,
        kinds=tuple(args.kind),
        states=tuple(args.state or OPEN_STATES),
        min_amount=args.min_amount,
        min_age=args.min_age,
        assignee=args.assignee,
    )


# --- output ----------------------------------------------------------------------------------


def _safe(value: object) -> str:
    """Text from bills may hold control or bidi characters: show them escaped (Alipay's
    tab after each id becomes \\t), never pass them to the terminal."""
    text = "" if value is None else str(value)
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Cf") else c
        for c in text
    )


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def _print_table(rows: list[list[str]], right: list[bool]) -> None:
    widths = [max(_width(r[i]) for r in rows) for i in range(len(right))]
    for r in rows:
        print("  ".join(_pad(v, w, a) for v, w, a in zip(r, widths, right, strict=True)).rstrip())


def _list(args: argparse.Namespace) -> int:
    with _connect(args) as con:
        breaks = list_breaks(con, _filter(args))
    columns = tuple(c for c, _, _ in TABLE)
    if args.format == "json":
        keep = {*columns, "amount_minor"}
        data = [{k: v for k, v in asdict(b).items() if k in keep} for b in breaks]
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    elif args.format == "csv":
        sys.stdout.write(neutralise_frame(breaks_frame(breaks, columns)).write_csv())
    else:
        rows = [[h for _, h, _ in TABLE]]
        rows += [[_safe(getattr(b, c)) for c in columns] for b in breaks]
        _print_table(rows, [a for _, _, a in TABLE])
        print(f"{len(breaks)} break(s)")
    return EXIT_CLEAN


def _show(args: argparse.Namespace) -> int:
    with _connect(args) as con:
        item = get_break(con, args.id)
        history = audit_history(con, args.id)
        notes = comments(con, args.id)
    print(f"break {item['break_id']}")
    for key, value in item.items():
        print(f"  {key + ':':<20}{_safe(value)}".rstrip())
    print("lineage")
    print(f"  bill:   {_safe(item['bill_file']) or '-'} line {_safe(item['bill_line']) or '-'}")
    print(f"          sha256 {_safe(item['bill_sha256']) or '-'}")
    print(f"  ledger: {_safe(item['ledger_file']) or '-'} row {_safe(item['ledger_row']) or '-'}")
    print(f"          sha256 {_safe(item['ledger_sha256']) or '-'}")
    _print_source("raw bill line", source_line, item["bill_file"], item["bill_line"])
    _print_source("raw ledger row", ledger_line, item["ledger_file"], item["ledger_row"])
    print(f"comments ({len(notes)})")
    for c in notes:
        print(f"  {c.logged_at}  {_safe(c.actor)}: {_safe(c.body)}")
    print(f"audit history ({len(history)})")
    for e in history:
        change = f"{e.from_state or '-'} -> {e.to_state or '-'}"
        print(f"  #{e.seq} {e.logged_at}  {_safe(e.actor)}  {e.action}  {change}  {_safe(e.note)}")
    return EXIT_CLEAN


def _print_source(
    title: str, read: Callable[[str, int], str], file: str | None, line: int | None
) -> None:
    if file is None or line is None:
        print(f"{title}: none recorded")
        return
    try:
        text = read(file, int(line))
    except SourceUnavailable as exc:
        print(f"{title}: unavailable ({_safe(exc)})")
        return
    print(f"{title} {line}:")
    print(f"  {_safe(text)}")


def _act(args: argparse.Namespace) -> int:
    action = args.breaks_command.replace("-", "_")
    req = Request(
        args.id,
        action,
        reason=getattr(args, "reason", None) or getattr(args, "text", None) or "",
        assignee=getattr(args, "assignee", None) or "",
    )
    actor = _actor(args)
    with _connect(args) as con:
        done = act(con, req, actor)
    change = f"{done.from_state} -> {done.to_state}"
    print(f"break {done.break_id}: {done.action} ({change}) by {actor}: {_safe(done.detail)}")
    return EXIT_CLEAN


def _export(args: argparse.Namespace) -> int:
    with _connect(args) as con:
        breaks = list_breaks(con, _filter(args))
    export_breaks(breaks, args.out)
    print(f"{len(breaks)} break(s) -> {args.out}")
    return EXIT_CLEAN


def _import(args: argparse.Namespace) -> int:
    actor = _actor(args)
    with _connect(args) as con:
        report = import_sheet(con, args.file, actor)
    for d in report.applied:
        print(f"break {d.break_id}: {d.action} ({d.from_state} -> {d.to_state}): {_safe(d.detail)}")
    print(
        f"{args.file}: applied {len(report.applied)} action(s) by {actor}, "
        f"ignored {report.ignored} row(s) without an action"
    )
    return EXIT_CLEAN
