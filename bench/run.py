"""Benchmark recon on generated channel-days and write bench/RESULTS.md.

``python -m bench.run --rows 1000000`` (``--rows`` again for more sizes; ``--help``)

The issue's full set (1M, 10M and 100M rows, both channels, the 100M bill gzipped,
recon and the floor under a 4 GiB memory cap, one run at 100M):

    uv run python -m bench.run --rows 1000000 --rows 10000000 --rows 100000000 \\
        --gzip-from 100000000 --memory-cap 4GiB --repeat-at 100000000=1 --clean

For each size and channel: generate the day (bench.generate, kept under
bench/work/<rows>/<channel>[-gz] and reused; deleted once measured only with
``--clean``), time recon's stages once (bench.stages, which also writes the normalized
sides) when a run below needs the sides, then run each of these as a whole separate
process, ``--repeat`` times in turn, taking wall time and the largest process's peak RSS
from ``/usr/bin/time`` (or getrusage when it is absent) and sampling the memory of the
whole process tree (recon parses in worker processes):

- ``recon``: ``recon run`` end to end on the bill and ledger files (store and outputs in
  the case's folder, the store fresh each time); its summary is checked against the
  answer;
- ``floor``: plain DuckDB parsing the same files and joining them both ways (bench.floor);
- ``diff``/``keyjoin``: recon.engine.diff, and a key-only full outer join, on the
  normalized sides (bench.diffstage): the stage alone is timed inside the process;
- ``datacompy``/``pandas``: datacompy's polars backend and a pandas merge on the same
  sides, in their own venv (bench/dc_compare.py).

``--memory-cap`` runs recon and the floor inside a memory cgroup of that size
(bench.cap); a run the kernel kills for exceeding it is recorded as failed (exit 137),
not timed. The runs that load the whole day into memory (diff, keyjoin, datacompy,
pandas) are not made above ``--in-memory-limit`` rows.

Medians, the spread and peak memory go to RESULTS.md with the machine, the versions,
the ratios to the floor, the growth with size and the issue's targets; the previous
file's figures are kept as history and compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import cap as capmod
from bench import cpu as cpumod

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "RESULTS.md"
DC_VENV = WORK / ".venv-datacompy"
DAY = dt.date(2024, 3, 1)
MARK = "<!-- bench-json"
RUNS = ("recon", "floor", "fieldfloor", "diff", "keyjoin", "datacompy", "pandas")
# Runs that load both normalized sides whole into memory (bench.diffstage reads them
# into polars frames; dc_compare into datacompy/pandas): limited by --in-memory-limit.
IN_MEMORY = ("diff", "keyjoin", "datacompy", "pandas")
CAPPED = ("recon", "floor", "fieldfloor")  # the runs --memory-cap applies to
SAMPLE_S = 0.2  # process-tree memory sampling interval, at shortest
# Reading a process's PSS walks its page tables (about 20 ms of CPU per GiB resident), and
# the run shares the machine with the sampling: sample less often rather than take more
# than this share of one core from the run.
SAMPLE_SHARE = 0.02
SCRATCH_S = 1.0  # scratch-on-disk sampling interval
GIB = 1 << 30
MIB = 1 << 20
# Disk bytes per transaction, measured on generated days: bill (plain / gzip), ledger,
# and an allowance for a run's scratch (Parquet parts of both sides, DuckDB spill, the
# sides' Parquet files), with a margin kept free.
BILL_BYTES = {("wechatpay", False): 281, ("wechatpay", True): 37,
              ("alipay", False): 215, ("alipay", True): 33}  # fmt: skip
LEDGER_BYTES = 107
SCRATCH_BYTES = 150
DISK_MARGIN = 5 * GIB
# The targets.
TARGET_ROWS = 10_000_000
BIG_ROWS = 100_000_000
FLOOR_RATIO, DIFF_RATIO, DATACOMPY_X = 1.5, 1.3, 6.0
PEAK_LIMIT_MIB, BIG_CAP = 2048, 4 * GIB


@dataclass
class Sample:
    wall: float  # seconds, whole process
    rss_mb: float  # peak resident set of the largest single process (kernel's maxrss)
    exit_code: int
    stage: float | None = None  # seconds of the stage alone, when the process reports it
    load: float = 0.0  # 1-minute load average when it started
    tree_mb: float | None = None  # peak sampled PSS summed over the process tree
    cgroup_mb: float | None = None  # the cap's cgroup peak (process memory + page cache)
    scratch_mb: float | None = None  # peak scratch files on disk during the run
    cpu_s: float | None = None  # CPU-seconds of the run's whole process tree
    others_s: float | None = None  # CPU-seconds the machine spent on anything else (bench.cpu)
    failed: str | None = None  # why the run does not count (killed by the cap, crashed...)


@dataclass
class Case:
    rows: int
    channel: str
    gzip: bool = False
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    generate_s: float | None = None
    stages: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # run -> why it has no timing

    @property
    def key(self) -> tuple[int, str, bool]:
        return (self.rows, self.channel, self.gzip)

    @property
    def bill_kind(self) -> str:
        return "csv.gz" if self.gzip else "csv"


@dataclass
class Cap:
    """The memory cap asked for, and whether it can be had here."""

    bytes: int
    problem: str | None  # "not enforced: ..." when it cannot
    how: str

    def describe(self) -> str:
        size = capmod.show_size(self.bytes)
        if self.problem:
            return f"{size} asked for, {self.problem}"
        return f"{size}, enforced: {self.how}"


# --- measuring a run -----------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _pss_bytes(pid: int) -> int:
    """Proportional set size (shared pages split between their users), else RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tree_bytes(path: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_bytes(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


class Watch(threading.Thread):
    """Samples, while a run lasts, the summed PSS of its processes and its scratch on disk."""

    def __init__(self, pids: Callable[[], list[int]], scratch: Callable[[], list[Path]]) -> None:
        super().__init__(daemon=True)
        self.pids, self.scratch = pids, scratch
        self.peak_mem = 0
        self.peak_disk = 0
        self.stop = threading.Event()

    def run(self) -> None:
        last_disk = 0.0
        while not self.stop.is_set():
            started = time.thread_time()
            try:
                self.peak_mem = max(self.peak_mem, sum(_pss_bytes(p) for p in self.pids()))
                now = time.monotonic()
                if now - last_disk >= SCRATCH_S:
                    last_disk = now
                    disk = sum(_tree_bytes(p) for p in self.scratch())
                    self.peak_disk = max(self.peak_disk, disk)
            except (OSError, ValueError):
                pass
            self.stop.wait(max(SAMPLE_S, (time.thread_time() - started) / SAMPLE_SHARE))


def measure(
    cmd: list[str],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    cap: Cap | None = None,
    scratch: Callable[[], list[Path]] = list,
    timeout: float | None = None,
) -> tuple[Sample, str]:
    """Run ``cmd`` as its own process (under ``cap`` when given and enforceable): wall
    seconds, peak memory and its stdout."""
    load = os.getloadavg()[0]
    time_bin = Path("/usr/bin/time")
    group_cm = capmod.capped(cap.bytes) if cap and not cap.problem else nullcontext(None)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf, group_cm as group:
        run = group.command(cmd) if group else cmd
        if time_bin.exists():
            full = [str(time_bin), "-f", "%e %M %U %S", "-o", tf.name, *run]
        else:  # getrusage of a helper whose only child is the command
            helper = (
                "import resource, subprocess, sys, time\n"
                "t = time.perf_counter(); code = subprocess.call(sys.argv[2:])\n"
                "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                "open(sys.argv[1], 'w').write(\n"
                "    f'{time.perf_counter() - t:.2f} {r.ru_maxrss} {r.ru_utime} {r.ru_stime}')\n"
                "sys.exit(code)\n"
            )
            full = [sys.executable, "-c", helper, tf.name, *run]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            counters = cpumod.read()
            proc = subprocess.Popen(
                full, cwd=cwd, env=env, stdout=out, stderr=err, text=True, start_new_session=True
            )
            pids: Callable[[], list[int]] = group.pids if group else lambda: _descendants(proc.pid)
            watch = Watch(pids, scratch)
            watch.start()
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the session this run started
                proc.wait()
            except BaseException:  # interrupted: do not leave the run behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            finally:
                counters_after = cpumod.read()
                watch.stop.set()
                watch.join()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        lines = Path(tf.name).read_text().strip().splitlines()
        kills = group.oom_kills() if group else 0
        cgroup_peak = group.peak_bytes() if group else None
    last = lines[-1].split() if lines else ["nan", "0"]
    try:
        wall, rss = float(last[0]), int(last[1]) / 1024
    except (ValueError, IndexError):
        wall, rss = float("nan"), 0.0
    try:
        cpu: float | None = float(last[2]) + float(last[3])
    except (ValueError, IndexError):
        cpu = None
    sample = Sample(
        wall,
        rss,
        proc.returncode,
        load=load,
        tree_mb=watch.peak_mem / MIB,
        cgroup_mb=None if cgroup_peak is None else cgroup_peak / MIB,
        scratch_mb=watch.peak_disk / MIB,
        cpu_s=cpu,
        others_s=cpumod.others(counters, counters_after, cpu),
    )
    if timed_out:
        sample.failed = f"timed out after {timeout:g} s (killed)"
    elif kills:
        sample.exit_code = 137
        sample.failed = (
            f"killed by the {capmod.show_size(cap.bytes if cap else 0)} memory cap "
            f"({kills} OOM kill(s) in its cgroup, exit {proc.returncode}): exit 137"
        )
    elif proc.returncode in (137, -9):
        sample.failed = "killed by signal 9 (the system's OOM killer?)"
    if proc.returncode not in (0, 1) or sample.failed:
        sys.stderr.write(stderr[-2000:])
    return sample, stdout


def others_pct(s: Sample) -> float | None:
    """The share of the machine (all its cores over the run's wall time) that went to
    anything but the run while it was timed (bench.cpu)."""
    cores = os.cpu_count() or 1
    if s.others_s is None or not s.wall > 0:
        return None
    return 100 * s.others_s / (cores * s.wall)


def others_summary(cases: list[Case]) -> str:
    """Median and largest others_pct over every timed run, naming the largest's run."""
    shares = [
        (pct, f"{name}, {c.rows:,} {c.channel}")
        for c in cases
        for name, ss in c.samples.items()
        for s in ss
        if s.failed is None and (pct := others_pct(s)) is not None
    ]
    if not shares:
        return "n/a"
    top, where = max(shares)
    return f"median {_median([p for p, _ in shares]):.1f}%, at most {top:.1f}% ({where})"


def peak_mb(s: Sample) -> float:
    """The run's peak memory: the sampled tree PSS, or the largest single process's exact
    maxrss when the sampling missed a spike above it."""
    return max(s.rss_mb, s.tree_mb or 0.0)


# --- the data ------------------------------------------------------------------------------


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


def folder_of(case: Case) -> Path:
    """One folder per (rows, channel, gzip): bench/work/<rows>/<channel>[-gz]."""
    return WORK / str(case.rows) / (case.channel + ("-gz" if case.gzip else ""))


def generated(folder: Path) -> bool:
    return (folder / "expected.json").exists()


def disk_needed(case: Case) -> tuple[int, int]:
    """(bytes the generated files take, bytes a run's scratch may take): estimates."""
    files = case.rows * (BILL_BYTES[(case.channel, case.gzip)] + LEDGER_BYTES)
    return files, case.rows * SCRATCH_BYTES


def check_disk(cases: list[Case], clean: bool) -> None:
    """Refuse, before anything runs, a plan the disk under bench/work cannot hold."""
    WORK.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(WORK).free
    new = [disk_needed(c)[0] for c in cases if not generated(folder_of(c))]
    files = max(new, default=0) if clean else sum(new)
    scratch = max((disk_needed(c)[1] for c in cases), default=0)
    need = files + scratch + DISK_MARGIN
    if need > free:
        kept = "the largest size's" if clean else "all sizes' (kept: no --clean)"
        hint = "" if clean else ", or add --clean to delete each size's files once measured"
        raise SystemExit(
            f"not enough disk under {WORK}: this plan needs about {need / 1e9:.0f} GB "
            f"({files / 1e9:.0f} GB for {kept} generated files, {scratch / 1e9:.0f} GB for "
            f"a run's scratch, {DISK_MARGIN / 1e9:.0f} GB kept free) and {free / 1e9:.0f} GB "
            f"is free (df -h {WORK}). Free some space, drop a size, use --gzip-from{hint}."
        )


def generate(case: Case, folder: Path, tree: Path, clean: bool) -> None:
    if not generated(folder):
        files, scratch = disk_needed(case)
        free = shutil.disk_usage(WORK).free
        if files + scratch + DISK_MARGIN > free:
            raise SystemExit(
                f"not enough disk to generate {case.rows:,} {case.channel} rows in {folder}: "
                f"about {(files + scratch) / 1e9:.0f} GB needed with the run's scratch, "
                f"{free / 1e9:.0f} GB free"
                + ("" if clean else " (earlier sizes' files are kept: --clean deletes them)")
            )
        cmd = [_python(tree), "-m", "bench.generate", "--rows", str(case.rows)]
        cmd += ["--channel", case.channel, "--out", str(folder)]
        if case.gzip:
            cmd.append("--gzip")
        sample, out = measure(cmd, cwd=tree)
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


def _scratch_of(folder: Path, out_dir: Path) -> Callable[[], list[Path]]:
    """recon's scratch (a ``.<out>-work-*`` folder beside --out) and the floor's spill."""
    return lambda: [*folder.glob(f".{out_dir.name}-work-*"), folder / "floor-tmp"]


def _clear(folder: Path, out_dir: Path, store: Path) -> None:
    """What a run leaves: the store, and scratch a killed run could not remove."""
    for stale in (store, Path(f"{store}.wal")):
        stale.unlink(missing_ok=True)
    for scratch in [*folder.glob(f".{out_dir.name}-work-*"), folder / "floor-tmp"]:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class Plan:
    repeat: int
    only: set[str]
    tree: Path
    in_memory: dict[str, str]  # runs not to make at this size, and why
    cap: Cap | None
    floor_memory_limit: str | None
    timeout: float | None
    clean: bool


def run_case(case: Case, plan: Plan) -> None:
    folder = folder_of(case)
    tree = plan.tree
    generate(case, folder, tree, plan.clean)
    expected = json.loads((folder / "expected.json").read_text())
    sides = folder / "sides"
    py = _python(tree)
    for name in RUNS:
        if name not in plan.only:
            case.skipped[name] = "not asked for (--only)"
        elif name in plan.in_memory:
            case.skipped[name] = plan.in_memory[name]
    if set(IN_MEMORY) - set(case.skipped):
        stages_json = folder / "stages.json"
        stages_json.unlink(missing_ok=True)
        # Always this tree's stages: they also write the sides the other runs start from.
        sample, _ = measure(
            [py, "-m", "bench.stages", "--channel", case.channel, "--dir", str(folder),
             "--json", str(stages_json), "--sides", str(sides)],
            timeout=plan.timeout,
        )  # fmt: skip
        if sample.exit_code or sample.failed:
            why = sample.failed or f"exit {sample.exit_code}"
            for name in IN_MEMORY:
                case.skipped.setdefault(name, f"no sides: bench.stages failed ({why})")
        elif tree == ROOT:
            case.stages = json.loads(stages_json.read_text())
    bill, ledger = bill_of(folder, case.channel), folder / f"ledger_{DAY:%Y%m%d}.csv"
    out_dir, store = folder / "out", folder / "store.duckdb"
    dc_problem = ensure_datacompy_venv() if {"datacompy", "pandas"} - set(case.skipped) else None
    floor_opts = ["--temp-dir", str(folder / "floor-tmp")]
    if plan.floor_memory_limit:
        floor_opts += ["--memory-limit", plan.floor_memory_limit]
    floor = [py, "-m", "bench.floor", "--channel", case.channel, "--bill", str(bill)]
    floor += ["--ledger", str(ledger), *floor_opts]
    commands: dict[str, list[str]] = {
        "recon": [py, "-m", "recon.cli", "run", "--channel", case.channel,
                  "--date", DAY.isoformat(), "--bill", str(bill), "--ledger", str(ledger),
                  "--out", str(out_dir), "--store", str(store)],
        "floor": floor,
        "fieldfloor": [*floor, "--fields"],
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
    scratch = _scratch_of(folder, out_dir)
    try:
        for i in range(plan.repeat):  # in turn, so a busy spell of the machine hits all alike
            for name in todo:
                if name in case.failed:
                    continue  # failed once: the same run would fail again
                _clear(folder, out_dir, store)
                print(f"[{case.rows} {case.channel} {case.bill_kind}] {name} run "
                      f"{i + 1}/{plan.repeat}", flush=True)  # fmt: skip
                sample, out = measure(
                    commands[name],
                    cwd=tree,
                    cap=plan.cap if name in CAPPED else None,
                    scratch=scratch,
                    timeout=plan.timeout,
                )
                ok_codes = (0, 1) if name == "recon" else (0,)
                if sample.failed is None and sample.exit_code not in ok_codes:
                    sample.failed = f"exit {sample.exit_code}"
                case.samples.setdefault(name, []).append(sample)
                if sample.failed:
                    case.failed[name] = sample.failed + (f" (run {i + 1})" if i else "")
                    print(f"  failed: {sample.failed}", flush=True)
                if name != "recon":
                    report = _json_line(out)
                    sample.stage = report.get("seconds")
                    if name not in case.checks and not sample.failed:
                        case.checks[name] = json.dumps(
                            {k: v for k, v in report.items() if k != "seconds"},
                            ensure_ascii=False,
                        )
                        if name in ("floor", "fieldfloor"):
                            case.checks[name] += check_floor(report, expected)
                elif "recon" not in case.checks:
                    case.checks["recon"] = check_recon(out_dir, expected, sample)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        _clear(folder, out_dir, store)
        if plan.clean:
            shutil.rmtree(folder, ignore_errors=True)


def check_recon(out_dir: Path, expected: dict[str, Any], sample: Sample) -> str:
    """Whether recon found exactly the injected breaks."""
    code = sample.exit_code
    if sample.failed:
        return f"failed: {sample.failed}"
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


def check_floor(report: dict[str, Any], expected: dict[str, Any]) -> str:
    want = {
        "both": expected["matched"],
        "bill_only": expected["local_missing"],
        "ledger_only": expected["channel_missing"] + expected["ledger_unsettled"],
    }
    if "differing" in report:  # the field floor: pairs whose amount or status differ
        want["differing"] = expected["field_mismatch_amount"] + expected["field_mismatch_status"]
    got = {k: report.get(k) for k in want}
    return ": as injected" if got == want else f": DIFFERS from {json.dumps(want)}"


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
    WORK.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(WORK)
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "os": platform.platform(),
        "disk under bench/work": f"{disk.total / 1e9:.0f} GB, {disk.free / 1e9:.0f} GB free at the end",
        "time": "/usr/bin/time" if Path("/usr/bin/time").exists() else "getrusage",
    }


def versions(results: Path = RESULTS) -> dict[str, str]:
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
        # The results file is rewritten after each size: not a change to what is measured.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", f":!{_relative(results)}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        out["recon commit"] = commit + (" + uncommitted changes" if dirty else "")
    except OSError:
        pass
    return out


def _relative(path: Path) -> str:
    """``path`` as git names it under ROOT (as given when outside)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# --- RESULTS.md ----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def medians(case: Case) -> dict[str, dict[str, float | None]]:
    """Medians of the runs that count (a failed run has none)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, all_samples in case.samples.items():
        samples = [s for s in all_samples if s.failed is None]
        if not samples or name in case.failed:
            continue
        stages = [s.stage for s in samples if s.stage is not None]
        scratch = [s.scratch_mb for s in samples if s.scratch_mb is not None]
        cpu = [s.cpu_s for s in samples if s.cpu_s is not None]
        others = [p for s in samples if (p := others_pct(s)) is not None]
        out[name] = {
            "wall": _median([s.wall for s in samples]),
            "rss_mb": _median([s.rss_mb for s in samples]),
            "peak_mb": _median([peak_mb(s) for s in samples]),
            "stage": _median(stages) if stages else None,
            "scratch_mb": max(scratch) if scratch else None,
            "cpu_s": _median(cpu) if cpu else None,
            "others_pct": max(others) if others else None,
        }
    return out


def previous(results: Path = RESULTS) -> dict[str, Any]:
    if not results.exists():
        return {}
    text = results.read_text()
    if MARK not in text:
        return {}
    body = text.split(MARK, 1)[1].rsplit("-->", 1)[0]
    try:
        return dict(json.loads(body))
    except json.JSONDecodeError:
        return {}


def _case_key(c: dict[str, Any]) -> tuple[int, str, bool]:
    """A recorded case's key; records from before --gzip had plain bills."""
    return (int(c["rows"]), str(c["channel"]), bool(c.get("gzip", False)))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _get(med: dict[str, dict[str, float | None]], run: str, what: str) -> float | None:
    return med.get(run, {}).get(what)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _outputs_ok(c: Case) -> bool:
    return c.checks.get("recon", "").endswith("as injected")


def targets(cases: list[Case], cap: Cap | None) -> list[str]:
    """The issue's targets, each with the measured figure and met / not met / n/a."""
    lines = [
        "## Targets (issue 5)",
        "",
        "| target | channel | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    channels = list(dict.fromkeys(c.channel for c in cases)) or ["wechatpay", "alipay"]

    def row(target: str, channel: str, measured: str, verdict: str) -> None:
        lines.append(f"| {target} | {channel} | {measured} | {verdict} |")

    def at(channel: str, rows: int) -> Case | None:
        """The case of this size (a plain bill first: the floor reads it as fast as it can)."""
        found = sorted((c for c in cases if c.channel == channel and c.rows == rows),
                       key=lambda c: c.gzip)  # fmt: skip
        return found[0] if found else None

    def stages(channel: str, a: str, b: str) -> tuple[Case, float, float] | None:
        """The stage medians of runs a and b at 10M, else at the largest size with both."""
        found = []
        for c in cases:
            med = medians(c)
            x, y = _get(med, a, "stage"), _get(med, b, "stage")
            if c.channel == channel and x and y:
                found.append((c.rows == TARGET_ROWS, c.rows, not c.gzip, c, x, y))
        if not found:
            return None
        *_, c, x, y = max(found, key=lambda f: f[:3])
        return c, x, y

    def why_not(channel: str, *runs: str) -> str:
        c = at(channel, TARGET_ROWS)
        if c is None:
            return f"not measured ({ten} not run)"
        for run in runs:
            if run in c.failed:
                return f"{run} failed at {ten}: {c.failed[run]}"
            if run in c.skipped:
                return f"{run} not run at {ten}: {c.skipped[run]}"
        return "not measured"

    ten = f"{TARGET_ROWS // 1_000_000}M"
    for ch in channels:
        c = at(ch, TARGET_ROWS)
        med = medians(c) if c else {}
        failed = c.failed if c else {}
        note = ""
        if c and c.gzip:
            note += f" (bill {c.bill_kind})"
        if c and "recon" in med and not _outputs_ok(c):
            note += " (recon's outputs NOT as injected)"
        good = c is not None and _outputs_ok(c)
        # 1. end to end within 1.5x the floor
        t = f"{ten} x {ten} end to end within {FLOOR_RATIO}x the DuckDB floor"
        r, f = _get(med, "recon", "wall"), _get(med, "floor", "wall")
        if c is None:
            row(t, ch, f"{ten} not run", "n/a")
        elif "recon" in failed or "floor" in failed:
            which = "recon" if "recon" in failed else "floor"
            row(t, ch, f"{which} failed: {failed[which]}", "**not met**")
        elif r is None or f is None:
            row(t, ch, "recon or floor not run", "n/a")
        else:
            ratio = r / f
            figure = f"{r:.1f} s / {f:.1f} s = {ratio:.2f}x{note}"
            row(t, ch, figure, _verdict(good and ratio <= FLOOR_RATIO))
        # 2. diff stage within 1.3x the key-only join
        t = f"diff stage within {DIFF_RATIO}x a key-only full outer join"
        got = stages(ch, "diff", "keyjoin")
        if got is None:
            row(t, ch, why_not(ch, "diff", "keyjoin"), "n/a")
        else:
            c2, d, k = got
            figure = f"{d:.2f} s / {k:.2f} s = {d / k:.2f}x at {c2.rows:,} rows"
            row(t, ch, figure, _verdict(d / k <= DIFF_RATIO))
        # 3. >= 6x faster than datacompy-polars on the diff
        t = f">= {DATACOMPY_X:g}x faster than datacompy (polars) on the diff"
        got = stages(ch, "datacompy", "diff")
        if got is None:
            row(t, ch, why_not(ch, "datacompy", "diff"), "n/a")
        else:
            c2, dc, d = got
            figure = f"{dc:.2f} s / {d:.2f} s = {dc / d:.1f}x at {c2.rows:,} rows"
            row(t, ch, figure, _verdict(dc / d >= DATACOMPY_X))
        # 4. peak memory under 2 GiB at 10M
        t = f"recon's peak memory under {PEAK_LIMIT_MIB / 1024:g} GiB at {ten}"
        p = _get(med, "recon", "peak_mb")
        if c is None:
            row(t, ch, f"{ten} not run", "n/a")
        elif "recon" in failed:
            row(t, ch, f"recon failed: {failed['recon']}", "**not met**")
        elif p is None:
            row(t, ch, "recon not run", "n/a")
        else:
            row(t, ch, f"{p / 1024:.2f} GiB{note}", _verdict(good and p < PEAK_LIMIT_MIB))
    big = f"{BIG_ROWS // 1_000_000}M"
    for ch in channels:
        # 5. 100M under a 4 GiB cap, by spilling
        t = f"a {big}-row day completes under a {BIG_CAP // GIB} GiB memory cap, spilling to disk"
        found = sorted((c for c in cases if c.channel == ch and c.rows >= BIG_ROWS),
                       key=lambda c: c.rows)  # fmt: skip
        if not found:
            row(t, ch, f"{big} not run", "n/a")
            continue
        c = found[0]
        med = medians(c)
        what = f"{c.rows:,} rows, bill {c.bill_kind}"
        if cap is None:
            row(t, ch, f"{what}: run without --memory-cap", "n/a")
        elif cap.problem:
            row(t, ch, f"{what}: cap {cap.problem}", "n/a (cap not enforced)")
        elif "recon" in c.failed:
            row(t, ch, f"{what}: recon {c.failed['recon']}", "**not met**")
        elif "recon" not in med:
            row(t, ch, f"{what}: recon not run", "n/a")
        else:
            m = med["recon"]
            figure = (
                f"{what}, cap {capmod.show_size(cap.bytes)} enforced: {_fmt(m['wall'], 0)} s, "
                f"peak {(m['peak_mb'] or 0) / 1024:.2f} GiB, scratch on disk up to "
                f"{(m['scratch_mb'] or 0) / 1024:.1f} GiB, outputs "
                + ("as injected" if _outputs_ok(c) else "NOT as injected")
            )
            row(t, ch, figure, _verdict(_outputs_ok(c) and cap.bytes <= BIG_CAP))
    sizes = sorted({c.rows for c in cases})
    lines += [
        "",
        "The diff targets are taken at 10M rows, else at the largest size they were run at.",
        "Growth from 1M to 10M to 100M rows: see *Growth* below (sizes run: "
        + ", ".join(f"{n:,}" for n in sizes)
        + "). Reproduce with the command above.",
        "",
    ]
    return lines


def growth(cases: list[Case]) -> list[str]:
    lines = [
        "## Growth",
        "",
        "Per channel, by size: recon end to end and the floor (medians), recon's peak memory",
        "(process tree), and the growth over the size before it.",
        "",
    ]
    for ch in dict.fromkeys(c.channel for c in cases):
        lines += [
            f"### {ch}",
            "",
            "| rows | bill | recon wall s | recon peak MiB | floor wall s | recon / floor "
            "| wall x | peak x | rows x |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        seen: list[tuple[Case, float | None, float | None]] = []
        for c in sorted((c for c in cases if c.channel == ch), key=lambda c: (c.rows, c.gzip)):
            med = medians(c)
            r, p = _get(med, "recon", "wall"), _get(med, "recon", "peak_mb")
            f = _get(med, "floor", "wall")
            rw = _fmt(r)
            if "recon" in c.failed:
                rw = "failed (exit 137)" if "exit 137" in c.failed["recon"] else "failed"
            fw = _fmt(f) if "floor" not in c.failed else "failed"
            ratio = f"{r / f:.2f}" if r and f else "n/a"
            # Growth over the size before (its same kind of bill when it has both).
            below = max((s[0].rows for s in seen if s[0].rows < c.rows), default=0)
            smaller = [s for s in seen if s[0].rows == below]
            same = [s for s in smaller if s[0].gzip == c.gzip]
            gw = gp = gr = ""
            if smaller:
                c0, r0, p0 = (same or smaller)[-1]
                gr = f"{c.rows / c0.rows:g}"
                gw = f"{r / r0:.1f}" if r and r0 else "n/a"
                gp = f"{p / p0:.1f}" if p and p0 else "n/a"
            seen.append((c, r, p))
            lines.append(
                f"| {c.rows:,} | {c.bill_kind} | {rw} | {_fmt(p, 0)} | {fw} | {ratio} "
                f"| {gw} | {gp} | {gr} |"
            )
        lines.append("")
    return lines


def render(
    cases: list[Case], meta: dict[str, Any], prev: dict[str, Any], history: list[dict[str, Any]]
) -> str:
    cap: Cap | None = meta.get("cap_obj")
    cap_line = (
        f"recon and floor runs capped at {cap.describe()}. A run the kernel kills for"
        " exceeding the cap is marked failed (exit 137) and not timed."
        if cap
        else "none (no --memory-cap): runs are limited only by the machine."
    )
    lines = [
        "# recon benchmarks",
        "",
        "Written by `python -m bench.run` (see its `--help`); do not edit by hand: the next run",
        "reads the figures back from the JSON block at the end and compares with them.",
        "",
        f"Run {meta['when']} with `{meta['command']}`; {meta['repeat']} run(s) of each"
        + (f" ({meta['repeat_at']})" if meta.get("repeat_at") else "")
        + f", medians shown; took {meta['took_s'] / 60:.0f} min.",
        "",
        f"Memory cap: {cap_line}",
        "",
        *targets(cases, cap),
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in meta["machine"].items()),
        *(f"- {k}: {v}" for k, v in meta["versions"].items()),
        f"- 1-minute load average when runs started: {meta['load']} (it still counts the"
        " previous run's own processes)",
        f"- other work while runs were timed (*others %* below): {meta.get('others', 'n/a')}",
        "",
        "## What is timed",
        "",
        "- **recon**: `recon run` end to end (parse and prove the bill in chunks in worker",
        "  processes to Parquet parts, load the ledger beside it in a thread, DuckDB diff over",
        "  the parts with a memory limit and spill, queues, break store, outputs), from",
        "  process start to exit. *bench.stages* times the parse and the ledger load one",
        "  after the other instead, to show each alone.",
        "- **floor**: plain DuckDB `read_csv` of the same bill (gunzipped by DuckDB when",
        "  `.csv.gz`) and ledger, keys, both-ways full outer join (bench/floor.py). recon's",
        "  ratio to it is the cost of everything recon checks and records beyond reading and",
        "  joining.",
        "- **fieldfloor**: the floor reading every field recon compares or reports as well",
        "  (ids, amount and fee in minor units, currency, status, times in the channel's zone,",
        "  the ledger's created_at), carrying them through the join and counting the pairs",
        "  that differ (`bench/floor.py --fields`). Still no checks, quarantine, line numbers",
        "  or outputs: the least a field-by-field reconciliation in plain DuckDB spends.",
        "- **diff** / **keyjoin**: `recon.engine.diff` and a key-only full outer join (same",
        "  engine, sides handed to it alike as Arrow string views, row pairs handed back to",
        "  polars) on the normalized sides loaded into memory (bench/diffstage.py); *stage s*",
        "  is the stage alone, measured inside the process.",
        "- **datacompy** / **pandas**: datacompy's polars backend (`PolarsCompare`, counts and",
        "  mismatching columns, no text report) and a pandas outer merge, on the same sides,",
        "  in their own venv (datacompy pins polars < 2).",
        "- wall s is of the whole process (interpreter start and imports included); **CPU s**",
        "  is its user and system time, worker processes included (`/usr/bin/time`).",
        "- **others %** is the largest share, over the runs, of the machine (every core for",
        "  the run's wall time) that went to anything but the run while it was timed: busy",
        "  CPU time the run did not spend and time the hypervisor stole (`/proc/stat`,",
        "  bench/cpu.py). It includes this runner's own memory sampling. A few percent is",
        "  quiet; more means the run shared the machine and its time is less certain.",
        "- **peak MiB** is the run's peak memory: the proportional set size (PSS: shared pages",
        "  split between the processes sharing them) summed over the whole process tree,",
        f"  sampled every {SAMPLE_S:g} s (less often for big processes, whose PSS takes long to",
        f"  read: the sampling takes at most {SAMPLE_SHARE:.0%} of one core), or the largest single",
        "  process's exact peak RSS",
        "  (kernel maxrss, *1-proc RSS*) when that is higher. *cgroup MiB* is the capped",
        "  cgroup's peak charge, page cache included (the kernel reclaims cache before it kills,",
        "  so it sits near the cap on big files). *scratch MiB* is the peak size of the run's",
        "  scratch files on disk (recon's Parquet parts and DuckDB spill; the floor's spill),",
        f"  sampled every {SCRATCH_S:g} s.",
        "",
        *growth(cases),
    ]
    prev_medians = {_case_key(c): c["medians"] for c in prev.get("cases", [])}
    for case in cases:
        med = medians(case)
        floor = _get(med, "floor", "wall")
        files = ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in case.files.items())
        gz = ", bill gzipped" if case.gzip else ""
        lines += [f"## {case.rows:,} rows, {case.channel}{gz}", "", f"Files: {files}."]
        if case.generate_s is not None:
            lines.append(f"Generated by bench.generate in {case.generate_s:.1f} s.")
        lines += [
            "",
            "| run | median wall s | min-max s | CPU s | stage s | peak MiB | 1-proc RSS MiB "
            "| cgroup MiB | scratch MiB | others % | x floor | previous wall s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        before = prev_medians.get(case.key, {})
        for name in RUNS:
            if name in case.skipped:
                lines.append(f"| {name} | not measured: {case.skipped[name]} |" + " |" * 10)
                continue
            if name in case.failed:
                lines.append(f"| {name} | **failed**: {case.failed[name]} |" + " |" * 10)
                continue
            m, samples = med[name], case.samples[name]
            walls = [s.wall for s in samples]
            cg = [s.cgroup_mb for s in samples if s.cgroup_mb is not None]
            ratio = f"{m['wall'] / floor:.2f}" if floor and m["wall"] else "n/a"
            old = before.get(name, {}).get("wall")
            lines.append(
                f"| {name} | {_fmt(m['wall'])} | {min(walls):.2f}-{max(walls):.2f} | "
                f"{_fmt(m['cpu_s'], 1)} | {_fmt(m['stage'], 3)} | {_fmt(m['peak_mb'], 0)} | "
                f"{_fmt(m['rss_mb'], 0)} | {_fmt(max(cg) if cg else None, 0)} | "
                f"{_fmt(m['scratch_mb'], 0)} | {_fmt(m['others_pct'], 1)} | {ratio} | "
                f"{_fmt(old)} |"
            )
        r, ff = _get(med, "recon", "wall"), _get(med, "fieldfloor", "wall")
        if r and ff and floor:
            lines += [
                "",
                f"recon / field floor (plain DuckDB reading and comparing every field): "
                f"{r:.2f} s / {ff:.2f} s = **{r / ff:.2f}x**; the field floor is "
                f"{ff / floor:.2f}x the key floor.",
            ]
        d, k = _get(med, "diff", "stage"), _get(med, "keyjoin", "stage")
        if d and k:
            verdict = "met" if d / k <= DIFF_RATIO else "not met"
            lines += [
                "",
                f"Diff stage / key-only join: {d:.3f} s / {k:.3f} s = **{d / k:.2f}x** "
                f"(target {DIFF_RATIO}x: {verdict}).",
            ]
        if case.stages:
            wall, cpu = case.stages.get("wall", {}), case.stages.get("cpu", {})
            lines += ["", "recon's stages in one process (bench.stages, one run):", ""]
            lines += ["| stage | wall s | cpu s |", "| --- | ---: | ---: |"]
            lines += [f"| {n} | {w:.3f} | {_fmt(cpu.get(n), 3)} |" for n, w in wall.items()]
        if case.checks:
            lines += ["", "Outputs (first run that completed):", ""]
            lines += [f"- {n}: {v}" for n, v in case.checks.items()]
        lines.append("")
    if history:
        lines += [
            "## History",
            "",
            "| when | commit | rows | channel | bill | recon s | recon peak MiB | floor s "
            "| diff stage s |",
            "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for h in history[-20:]:
            for c in h["cases"]:
                m = c["medians"]
                recon = m.get("recon", {})
                recon_s = _fmt(recon.get("wall"))
                if "recon" in c.get("failed", {}):
                    recon_s = "failed"
                lines.append(
                    f"| {h['when']} | {h.get('label') or h.get('commit', '')} | {c['rows']:,} | "
                    f"{c['channel']} | {'csv.gz' if c.get('gzip') else 'csv'} | {recon_s} | "
                    f"{_fmt(recon.get('peak_mb', recon.get('rss_mb')), 0)} | "
                    f"{_fmt(m.get('floor', {}).get('wall'))} | "
                    f"{_fmt(m.get('diff', {}).get('stage'), 3)} |"
                )
        lines += [
            "",
            "recon peak MiB: the process tree's peak where recorded, else (records before the",
            "streaming refactor, one process) its peak RSS.",
            "",
        ]
    return "\n".join(lines)


def _repeat_at(text: str) -> tuple[int, int]:
    rows, _, n = text.partition("=")
    try:
        return int(rows), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROWS=N, e.g. 100000000=1, not {text!r}"
        ) from None


def _size(text: str) -> int:
    try:
        return capmod.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _interrupt_note() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit("interrupted: RESULTS.md not written") from None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:9]),
    )
    ap.add_argument("--rows", type=int, action="append", help="transactions per day (repeatable)")
    ap.add_argument("--channel", action="append", choices=["wechatpay", "alipay"])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (median taken)")
    ap.add_argument(
        "--repeat-at",
        type=_repeat_at,
        action="append",
        default=[],
        metavar="ROWS=N",
        help="runs of each at this size instead of --repeat (e.g. 100000000=1; repeatable)",
    )
    ap.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {RUNS}")
    ap.add_argument("--tree", type=Path, default=ROOT, help="run recon from this source tree")
    ap.add_argument("--label", default="", help="name this run in the history")
    ap.add_argument(
        "--in-memory-limit",
        type=int,
        default=10_000_000,
        help="above this many rows the runs that load the whole day into memory "
        f"({', '.join(IN_MEMORY)}) are not made; recon and the floor run at every size",
    )
    ap.add_argument(
        "--memory-cap",
        type=_size,
        metavar="SIZE",
        help="run recon and the floor in a memory cgroup of this size (e.g. 4GiB); "
        "a run killed by it is recorded as failed (exit 137)",
    )
    ap.add_argument(
        "--floor-memory-limit",
        metavar="SIZE",
        help="DuckDB memory_limit for the floor (default: DuckDB's own, 80%% of the "
        "memory or of the cap's cgroup)",
    )
    ap.add_argument("--gzip", action="store_true", help="gzip the bill at every size")
    ap.add_argument(
        "--gzip-from", type=int, metavar="ROWS", help="gzip the bill at this size and above"
    )
    ap.add_argument(
        "--clean",
        action="store_true",
        help="delete each size's generated files once it is measured (kept and reused "
        "otherwise; 100M rows take about 15 GB gzipped, 40 GB plain)",
    )
    ap.add_argument("--timeout", type=float, help="seconds before a run is killed and failed")
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="ROWS:CHANNEL",
        help="leave out this case (e.g. 100000000:alipay; repeatable)",
    )
    ap.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    ap.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="write (and compare with) this file instead of bench/RESULTS.md, e.g. for a "
        "run of one case that should not replace the full set",
    )
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # clean up the run in flight, as on Ctrl-C
    sizes = a.rows or [1_000_000]
    channels = a.channel or ["wechatpay", "alipay"]
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    if only - set(RUNS):
        ap.error(f"--only: unknown runs {sorted(only - set(RUNS))}; choose from {RUNS}")
    repeat_at = dict(a.repeat_at)
    gzip_from = 0 if a.gzip else a.gzip_from
    cap: Cap | None = None
    if a.memory_cap:
        problem, how = capmod.probe(a.memory_cap)
        cap = Cap(a.memory_cap, problem, how)
        print(f"memory cap: {cap.describe()}", flush=True)
    cases = [
        Case(rows, channel, gzip=gzip_from is not None and rows >= gzip_from)
        for rows in sizes
        for channel in channels
    ]
    skip = {tuple(x.split(":", 1)) for x in a.skip}
    cases = [c for c in cases if (str(c.rows), c.channel) not in skip]
    check_disk(cases, a.clean)
    results = a.results.resolve()
    prev = previous(results)
    started = time.time()
    loads: list[float] = []
    done: list[Case] = []

    def write(done: list[Case]) -> None:
        meta: dict[str, Any] = {
            "when": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "command": "python -m bench.run "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "repeat": a.repeat,
            "repeat_at": ", ".join(f"{n} at {r:,} rows" for r, n in repeat_at.items()),
            "machine": machine(),
            "versions": versions(results),
            "load": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a",
            "others": others_summary(done),
            "took_s": round(time.time() - started),
            "memory_cap": None if cap is None else asdict(cap),
        }
        summary = {
            "when": meta["when"],
            "label": a.label,
            "commit": meta["versions"].get("recon commit", ""),
            "cases": [
                {
                    "rows": c.rows,
                    "channel": c.channel,
                    "gzip": c.gzip,
                    "medians": medians(c),
                    "failed": c.failed,
                }
                for c in done
            ],
        }
        record = {
            **summary,
            "meta": meta,
            "samples": [
                {
                    "rows": c.rows,
                    "channel": c.channel,
                    "gzip": c.gzip,
                    "runs": {n: [asdict(s) for s in ss] for n, ss in c.samples.items()},
                }
                for c in done
            ],
            "history": [*prev.get("history", []), summary],
        }
        text = render(done, {**meta, "cap_obj": cap}, prev, record["history"])
        text += f"\n{MARK}\n{json.dumps(record, indent=1)}\n-->\n"
        if a.no_write:
            print(text)
        else:
            results.write_text(text)
            print(f"wrote {results} ({meta['took_s']} s)")

    with _interrupt_note():
        for case in cases:
            limit: dict[str, str] = {}
            if case.rows > a.in_memory_limit:
                why = (
                    f"not run above {a.in_memory_limit:,} rows (--in-memory-limit): it loads "
                    f"both sides whole into memory, and this {machine()['memory']} machine is "
                    "shared"
                )
                limit = dict.fromkeys(IN_MEMORY, why)
            plan = Plan(
                repeat=repeat_at.get(case.rows, a.repeat),
                only=only,
                tree=a.tree.resolve(),
                in_memory=limit,
                cap=cap,
                floor_memory_limit=a.floor_memory_limit,
                timeout=a.timeout,
                clean=a.clean,
            )
            run_case(case, plan)
            loads += [s.load for ss in case.samples.values() for s in ss]
            done.append(case)
            # After each case: a run cut short still leaves what it measured.
            write(done)


if __name__ == "__main__":
    main()
