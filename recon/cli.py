"""``recon``: reconcile a channel-day, or parse a bill into the standard schema.

Exit codes (as datacompy's): 0 no breaks, 1 breaks or quarantined rows, 2 error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from recon import cli_breaks
from recon.errors import ConfigError, FetchError, InputError
from recon.pipeline import (
    EXIT_BREAKS,
    EXIT_CLEAN,
    EXIT_ERROR,
    parse_bill,
    reconcile_day,
    work_space,
)
from recon.rules import load_rules


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors are bad input too: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"recon: error: {message} (see recon --help)\n")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="recon", description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=Path, help="rules TOML (default: rules/channels.toml)")
    talk = ap.add_mutually_exclusive_group()
    talk.add_argument(
        "-v", "--verbose", action="store_true", help="log progress (and libraries' logs) to stderr"
    )
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="no progress on stderr, even on a terminal"
    )
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="reconcile one channel-day into three queues")
    run.add_argument("--channel", required=True)
    run.add_argument("--date", required=True, type=_date, help="business date, YYYY-MM-DD")
    run.add_argument("--bill", required=True, type=Path)
    run.add_argument("--ledger", required=True, type=Path, help="ledger export, CSV or Parquet")
    run.add_argument("--out", required=True, type=Path, help="output directory")
    run.add_argument("--store", type=Path, help="DuckDB store (default: from rules)")
    run.add_argument(
        "--requery-answers",
        type=Path,
        help="JSON answers of the channel re-query simulator (recon.requery.SimulatedChannel)",
    )

    night = sub.add_parser(
        "nightly",
        help="fetch, normalize and reconcile one channel-day outside Airflow "
        "(endpoint from RECON_SFTP_<CHANNEL>_URL)",
    )
    night.add_argument("--channel", required=True)
    night.add_argument("--date", required=True, type=_date, help="business date, YYYY-MM-DD")
    night.add_argument("--force-download", action="store_true", help="fetch the bill again")

    parse = sub.add_parser("parse", help="parse a bill into the standard schema")
    parse.add_argument("--channel", required=True)
    parse.add_argument("--bill", required=True, type=Path)
    parse.add_argument("--out", required=True, type=Path, help=".csv or .parquet")
    parse.add_argument(
        "--no-totals", action="store_true", help="skip the control-totals check (excerpts)"
    )
    cli_breaks.register(sub)
    return ap


def _cmd_run(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    from recon.requery import SimulatedChannel

    requery = SimulatedChannel.from_file(args.requery_answers) if args.requery_answers else None
    result = reconcile_day(
        rules, args.channel, args.date, args.bill, args.ledger, args.out,
        store_path=args.store, requery=requery,
    )  # fmt: skip
    _print_run(result.summary, args.out)
    return result.exit_code


def _print_run(s: dict[str, Any], out: Path) -> None:
    q = s["queues"]
    print(
        f"{s['channel']} {s['business_date']}: matched {s['matched']}, "
        f"local_missing {q['local_missing']['count']}, "
        f"channel_missing {q['channel_missing']['count']}, "
        f"field_mismatch {q['field_mismatch']['count']} "
        f"({q['field_mismatch']['pairs']} records), quarantined {s['quarantined']} -> {out}"
    )


def _cmd_nightly(args: argparse.Namespace) -> int:
    from recon.nightly import endpoint_from_env, run_channel_day

    rules = load_rules(args.rules)
    endpoint = endpoint_from_env(args.channel)
    result = run_channel_day(rules, args.channel, args.date, endpoint, force=args.force_download)
    _print_run(result.summary, result.out_dir)
    return result.exit_code


def _cmd_parse(args: argparse.Namespace) -> int:
    from recon.outputs import write_frame

    rules = load_rules(args.rules)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with work_space(out) as work:
        parsed = parse_bill(
            rules.channel(args.channel), args.bill, check_totals=not args.no_totals, work_dir=work
        )
        if out.suffix.lower() == ".parquet":
            parsed.rows.sink_parquet(out)
        else:
            parsed.rows.sink_csv(out)
    if parsed.quarantine.height:
        write_frame(parsed.quarantine, out.with_name(out.stem + ".quarantine"))
    print(
        f"{args.bill}: layout {parsed.layout}, read {parsed.rows_read}, "
        f"parsed {parsed.n_rows}, quarantined {parsed.quarantine.height} -> {out}"
    )
    return EXIT_BREAKS if parsed.quarantine.height else EXIT_CLEAN


def _log_to_stderr(verbose: bool, quiet: bool) -> None:
    """-v: every INFO log, named. On a terminal by default: recon's own progress (stages,
    rows so far), as a long run should show; piped or -q: warnings only."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not verbose and not quiet and sys.stderr.isatty():
        logging.getLogger("recon").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    _log_to_stderr(args.verbose, args.quiet)
    try:
        commands = {"run": _cmd_run, "nightly": _cmd_nightly, "parse": _cmd_parse}
        commands["breaks"] = cli_breaks.run
        return commands[args.command](args)
    except (InputError, ConfigError, FetchError) as exc:
        print(f"recon: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug, not bad input: still one line unless asked
        if os.environ.get("RECON_DEBUG"):
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"recon: internal error: {type(exc).__name__}: {first}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
