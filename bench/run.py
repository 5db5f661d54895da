"""Benchmark recon on generated channel-days and write bench/RESULTS.md.

``python -m bench.run --rows 1000000`` (``--rows`` again for more sizes; ``--help``)

For each size and channel: generate the day (bench.generate, kept under bench/work and
reused), time recon's stages once (bench.stages, which also writes the normalized
sides), then run each of these as a whole separate process, ``--repeat`` times in turn,
taking wall time and peak RSS from ``/usr/bin/time`` (or getrusage when it is absent):

- ``recon``: ``recon run`` end to end on the bill and ledger files (store and outputs in
  bench/work, the store fresh each time); its summary is checked against the answer;
- ``floor``: plain DuckDB parsing the same files and joining them both ways (bench.floor);
- ``diff``/``keyjoin``: recon.engine.diff, and a key-only full outer join, on the
  normalized sides (bench.diffstage): the stage alone is timed inside the process;
- ``datacompy``/``pandas``: datacompy's polars backend and a pandas merge on the same
  sides, in their own venv (bench/dc_compare.py).

Medians, the spread and peak memory go to RESULTS.md with the machine, the versions and
the ratios to the floor; the previous file's figures are kept as history and compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "RESULTS.md"
DC_VENV = WORK / ".venv-datacompy"
DAY = dt.date(2024, 3, 1)
MARK = "<!-- bench-json"
RUNS = ("recon", "floor", "diff", "keyjoin", "datacompy", "pandas")


@dataclass
class Sample:
    wall: float  # seconds, whole process
    rss_mb: float  # peak resident set
    exit_code: int
    stage: float | None = None  # seconds of the stage alone, when the process reports it
    load: float = 0.0  # 1-minute load average when it started


@dataclass
class Case:
    rows: int
    channel: str
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    generate_s: float | None = None
    stages: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def measure(
    cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[Sample, str]:
    """Run ``cmd`` as its own process: wall seconds, peak RSS and its stdout."""
    load = os.getloadavg()[0]
    time_bin = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        if time_bin.exists():
            full = [str(time_bin), "-f", "%e %M", "-o", tf.name, *cmd]
        else:  # getrusage of a helper whose only child is the command
            helper = (
                "import resource, subprocess, sys, time\n"
                "t = time.perf_counter(); code = subprocess.call(sys.argv[2:])\n"
                "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
                "open(sys.argv[1], 'w').write(f'{time.perf_counter() - t:.2f} {peak}')\n"
                "sys.exit(code)\n"
            )
            full = [sys.executable, "-c", helper, tf.name, *cmd]
        proc = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
        last = Path(tf.name).read_text().strip().splitlines()[-1].split()
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr[-2000:])
    return Sample(float(last[0]), int(last[1]) / 1024, proc.returncode, load=load), proc.stdout


def _python(tree: Path) -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def _dc_python() -> Path:
    return DC_VENV / "bin" / "python"


def ensure_datacompy_venv() -> str | None:
    """Create the throwaway venv; the reason when it cannot be had."""
    if _dc_python().exists():
        return None
    uv = shutil.which("uv")
    if uv is None:
        return "uv not found"
    steps = [
        [uv, "venv", str(DC_VENV), "--python", "3.11"],
        [uv, "pip", "install", "--python", str(DC_VENV), "datacompy", "polars<2", "pyarrow"],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True)
        if proc.returncode:
            return f"{' '.join(step[:3])} failed: {proc.stderr.strip()[-300:]}"
    return None


def generate(case: Case, folder: Path, tree: Path) -> None:
    if not (folder / "expected.json").exists():
        cmd = [_python(tree), "-m", "bench.generate", "--rows", str(case.rows)]
        sample, out = measure([*cmd, "--channel", case.channel, "--out", str(folder)], cwd=tree)
        if sample.exit_code:
            raise SystemExit(f"bench.generate failed: {out}")
        case.generate_s = sample.wall
    case.files = {
        p.name: p.stat().st_size
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.name.startswith(case.channel) or p.name.startswith("ledger"))
    }


def bill_of(folder: Path, channel: str) -> Path:
    return next(p for p in folder.iterdir() if p.name.startswith(channel + "_"))


def _json_line(out: str) -> dict[str, Any]:
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {}


def run_case(
    case: Case, repeat: int, only: set[str], tree: Path, in_memory: dict[str, str]
) -> None:
    """``in_memory``: runs not to make at this size (they hold the day in memory), and why."""
    folder = WORK / str(case.rows) / case.channel
    generate(case, folder, tree)
    expected = json.loads((folder / "expected.json").read_text())
    sides = folder / "sides"
    py = _python(tree)
    for name in RUNS:
        if name not in only:
            case.skipped[name] = "not asked for (--only)"
        elif name in in_memory:
            case.skipped[name] = in_memory[name]
    if {"diff", "keyjoin", "datacompy", "pandas"} - set(case.skipped):
        stages_json = folder / "stages.json"
        stages_json.unlink(missing_ok=True)
        # Always this tree's stages: they also write the sides the other runs start from.
        sample, _ = measure(
            [py, "-m", "bench.stages", "--channel", case.channel, "--dir", str(folder),
             "--json", str(stages_json), "--sides", str(sides)],
        )  # fmt: skip
        if sample.exit_code:
            raise SystemExit(f"bench.stages failed on {folder}")
        if tree == ROOT:
            case.stages = json.loads(stages_json.read_text())
    bill, ledger = bill_of(folder, case.channel), folder / f"ledger_{DAY:%Y%m%d}.csv"
    out_dir, store = folder / "out", folder / "store.duckdb"
    dc_problem = ensure_datacompy_venv() if {"datacompy", "pandas"} - set(case.skipped) else None
    commands: dict[str, list[str]] = {
        "recon": [py, "-m", "recon.cli", "run", "--channel", case.channel,
                  "--date", DAY.isoformat(), "--bill", str(bill), "--ledger", str(ledger),
                  "--out", str(out_dir), "--store", str(store)],
        "floor": [py, "-m", "bench.floor", "--channel", case.channel, "--bill", str(bill),
                  "--ledger", str(ledger)],
        "diff": [py, "-m", "bench.diffstage", "--sides", str(sides), "--mode", "recon"],
        "keyjoin": [py, "-m", "bench.diffstage", "--sides", str(sides), "--mode", "keyjoin"],
        "datacompy": [str(_dc_python()), str(ROOT / "bench" / "dc_compare.py"),
                      "--sides", str(sides), "--mode", "datacompy"],
        "pandas": [str(_dc_python()), str(ROOT / "bench" / "dc_compare.py"),
                   "--sides", str(sides), "--mode", "pandas"],
    }  # fmt: skip
    for name in ("datacompy", "pandas"):
        if name not in case.skipped and dc_problem:
            case.skipped[name] = dc_problem
    todo = [n for n in RUNS if n not in case.skipped]
    for i in range(repeat):  # in turn, so a busy spell of the machine hits all alike
        for name in todo:
            for stale in (store, Path(f"{store}.wal")):
                stale.unlink(missing_ok=True)
            print(f"[{case.rows} {case.channel}] {name} run {i + 1}/{repeat}", flush=True)
            sample, out = measure(commands[name], cwd=tree)
            if name != "recon":
                report = _json_line(out)
                sample.stage = report.get("seconds")
                if i == 0:
                    case.checks[name] = json.dumps(
                        {k: v for k, v in report.items() if k != "seconds"}, ensure_ascii=False
                    )
            case.samples.setdefault(name, []).append(sample)
            if name == "recon" and i == 0:
                case.checks["recon"] = check_recon(out_dir, expected, sample.exit_code)
    shutil.rmtree(out_dir, ignore_errors=True)
    for stale in (store, Path(f"{store}.wal")):
        stale.unlink(missing_ok=True)


def check_recon(out_dir: Path, expected: dict[str, Any], code: int) -> str:
    """Whether recon found exactly the injected breaks."""
    try:
        s = json.loads((out_dir / "summary.json").read_text())
    except OSError as exc:
        return f"no summary.json (exit {code}): {exc}"
    q = s["queues"]
    got = {
        "matched": s["matched"],
        "local_missing": q["local_missing"]["count"],
        "channel_missing": q["channel_missing"]["count"],
        "ledger_unsettled": s["ledger_unsettled"],
        "field_mismatch": q["field_mismatch"]["count"],
    }
    want = {k: expected[k] for k in ("matched", "local_missing", "channel_missing")}
    want["ledger_unsettled"] = expected["ledger_unsettled"]
    want["field_mismatch"] = expected["field_mismatch_amount"] + expected["field_mismatch_status"]
    verdict = "as injected" if got == want and code == 1 else f"DIFFERS from {want}"
    return f"exit {code}, {json.dumps(got)}: {verdict}"


# --- machine and versions ----------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "os": platform.platform(),
        "time": "/usr/bin/time" if Path("/usr/bin/time").exists() else "getrusage",
    }


def versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    probe = "import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    main = subprocess.run(
        [_python(ROOT), "-c", probe, "polars", "duckdb", "pyarrow"], capture_output=True, text=True
    )
    out |= json.loads(main.stdout or "{}")
    if _dc_python().exists():
        dc = subprocess.run(
            [str(_dc_python()), "-c", probe, "datacompy", "polars", "pandas"],
            capture_output=True,
            text=True,
        )
        out |= {f"{k} (datacompy venv)": v for k, v in json.loads(dc.stdout or "{}").items()}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        out["recon commit"] = commit + (" + uncommitted changes" if dirty else "")
    except OSError:
        pass
    return out


# --- RESULTS.md ----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def medians(case: Case) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, samples in case.samples.items():
        stages = [s.stage for s in samples if s.stage is not None]
        out[name] = {
            "wall": _median([s.wall for s in samples]),
            "rss_mb": _median([s.rss_mb for s in samples]),
            "stage": _median(stages) if stages else None,
        }
    return out


def previous() -> dict[str, Any]:
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text()
    if MARK not in text:
        return {}
    body = text.split(MARK, 1)[1].rsplit("-->", 1)[0]
    try:
        return dict(json.loads(body))
    except json.JSONDecodeError:
        return {}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render(
    cases: list[Case], meta: dict[str, Any], prev: dict[str, Any], history: list[dict[str, Any]]
) -> str:
    lines = [
        "# recon benchmarks",
        "",
        "Written by `python -m bench.run` (see its `--help`); do not edit by hand: the next run",
        "reads the figures back from the JSON block at the end and compares with them.",
        "",
        f"Run {meta['when']} with `{meta['command']}`; {meta['repeat']} runs of each, medians shown.",
        "",
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in meta["machine"].items()),
        *(f"- {k}: {v}" for k, v in meta["versions"].items()),
        f"- 1-minute load average when runs started: {meta['load']}"
        " (the machine is shared: other work runs beside the benchmark)",
        "",
        "## What is timed",
        "",
        "- **recon**: `recon run` end to end (parse and prove the bill, load the ledger, diff,",
        "  queues, break store, outputs), one process.",
        "- **floor**: plain DuckDB `read_csv` of the same bill and ledger, keys, both-ways full",
        "  outer join (bench/floor.py). recon's ratio to it is the cost of everything recon",
        "  checks and records beyond reading and joining.",
        "- **diff** / **keyjoin**: `recon.engine.diff` and a key-only full outer join (same",
        "  engine, same hand-over of row pairs to polars) on the normalized sides in memory;",
        "  *stage s* is the stage alone, measured inside the process.",
        "- **datacompy** / **pandas**: datacompy's polars backend (`PolarsCompare`, counts and",
        "  mismatching columns, no text report) and a pandas outer merge, on the same sides,",
        "  in their own venv (datacompy pins polars < 2).",
        "- wall s and peak RSS are of the whole process (interpreter start and imports included).",
        "",
    ]
    prev_medians = {(c["rows"], c["channel"]): c["medians"] for c in prev.get("cases", [])}
    for case in cases:
        med = medians(case)
        floor = med.get("floor", {}).get("wall")
        files = ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in case.files.items())
        lines += [f"## {case.rows:,} rows, {case.channel}", "", f"Files: {files}."]
        if case.generate_s is not None:
            lines.append(f"Generated by bench.generate in {case.generate_s:.1f} s.")
        lines += [
            "",
            "| run | median wall s | min-max s | stage s | peak RSS MB | x floor | previous wall s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        before = prev_medians.get((case.rows, case.channel), {})
        for name in RUNS:
            if name in case.skipped:
                lines.append(f"| {name} | not measured: {case.skipped[name]} | | | | | |")
                continue
            m, samples = med[name], case.samples[name]
            walls = [s.wall for s in samples]
            ratio = f"{m['wall'] / floor:.2f}" if floor and m["wall"] else "n/a"
            old = before.get(name, {}).get("wall")
            lines.append(
                f"| {name} | {_fmt(m['wall'])} | {min(walls):.2f}-{max(walls):.2f} | "
                f"{_fmt(m['stage'], 3)} | {_fmt(m['rss_mb'], 0)} | {ratio} | {_fmt(old)} |"
            )
        d, k = med.get("diff", {}).get("stage"), med.get("keyjoin", {}).get("stage")
        if d and k:
            verdict = "met" if d / k <= 1.3 else "not met"
            lines += [
                "",
                f"Diff stage / key-only join: {d:.3f} s / {k:.3f} s = **{d / k:.2f}x** "
                f"(target 1.3x: {verdict}).",
            ]
        if case.stages:
            wall, cpu = case.stages.get("wall", {}), case.stages.get("cpu", {})
            lines += ["", "recon's stages in one process (bench.stages, one run):", ""]
            lines += ["| stage | wall s | cpu s |", "| --- | ---: | ---: |"]
            lines += [f"| {n} | {w:.3f} | {_fmt(cpu.get(n), 3)} |" for n, w in wall.items()]
        if case.checks:
            lines += ["", "Outputs (first run):", ""]
            lines += [f"- {n}: {v}" for n, v in case.checks.items()]
        lines.append("")
    if history:
        lines += [
            "## History",
            "",
            "| when | commit | rows | channel | recon s | floor s | diff stage s |",
        ]
        lines += ["| --- | --- | ---: | --- | ---: | ---: | ---: |"]
        for h in history[-20:]:
            for c in h["cases"]:
                m = c["medians"]
                lines.append(
                    f"| {h['when']} | {h.get('label') or h.get('commit', '')} | {c['rows']:,} | "
                    f"{c['channel']} | {_fmt(m.get('recon', {}).get('wall'))} | "
                    f"{_fmt(m.get('floor', {}).get('wall'))} | "
                    f"{_fmt(m.get('diff', {}).get('stage'), 3)} |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="transactions per day (repeatable)")
    ap.add_argument("--channel", action="append", choices=["wechatpay", "alipay"])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (median taken)")
    ap.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {RUNS}")
    ap.add_argument("--tree", type=Path, default=ROOT, help="run recon from this source tree")
    ap.add_argument("--label", default="", help="name this run in the history")
    ap.add_argument(
        "--in-memory-limit",
        type=int,
        default=2_000_000,
        help="above this many rows only the generator and the streaming floor run "
        "(recon, the diff runs and the baselines hold the whole day in memory)",
    )
    ap.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    a = ap.parse_args(argv)
    sizes = a.rows or [1_000_000]
    channels = a.channel or ["wechatpay", "alipay"]
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    started = time.time()
    loads: list[float] = []
    cases: list[Case] = []
    for rows in sizes:
        for channel in channels:
            case = Case(rows, channel)
            limit: dict[str, str] = {}
            if rows > a.in_memory_limit:
                peaks = [(smp.rss_mb, c.rows) for c in cases for smp in c.samples.get("recon", [])]
                seen = ""
                if peaks:
                    peak_mb, at_rows = max(peaks)
                    seen = f"; recon's peak RSS was {peak_mb / 1024:.1f} GiB at {at_rows:,} rows"
                why = (
                    f"not run above {a.in_memory_limit:,} rows (--in-memory-limit): it holds the "
                    f"whole day in memory{seen}, and this {machine()['memory']} machine is shared"
                )
                limit = dict.fromkeys(("recon", "diff", "keyjoin", "datacompy", "pandas"), why)
            run_case(case, a.repeat, only, a.tree.resolve(), limit)
            loads += [s.load for ss in case.samples.values() for s in ss]
            cases.append(case)
    meta = {
        "when": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeat": a.repeat,
        "machine": machine(),
        "versions": versions(),
        "load": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a",
        "took_s": round(time.time() - started),
    }
    prev = previous()
    summary = {
        "when": meta["when"],
        "label": a.label,
        "commit": meta["versions"].get("recon commit", ""),
        "cases": [{"rows": c.rows, "channel": c.channel, "medians": medians(c)} for c in cases],
    }
    record = {
        **summary,
        "meta": meta,
        "samples": [
            {
                "rows": c.rows,
                "channel": c.channel,
                "runs": {n: [asdict(s) for s in ss] for n, ss in c.samples.items()},
            }
            for c in cases
        ],
        "history": [*prev.get("history", []), summary],
    }
    text = render(cases, meta, prev, record["history"])
    text += f"\n{MARK}\n{json.dumps(record, indent=1)}\n-->\n"
    if a.no_write:
        print(text)
    else:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS} ({meta['took_s']} s)")


if __name__ == "__main__":
    main()
