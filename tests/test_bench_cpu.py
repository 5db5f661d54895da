"""The benchmark runner's account of a run's CPU and of what else the machine did.

Not a benchmark: nothing here is timed against a limit. It checks that the runner
counts a run's own CPU (worker processes included) and does not take it for other work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cpu
from bench.run import Sample, measure, others_pct

HZ = os.sysconf("SC_CLK_TCK")


def burn(seconds: float) -> str:
    """Python code that spends ``seconds`` of CPU."""
    return f"import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass"


# One second of CPU in a child of the measured process, as recon's parse workers are.
BURN_IN_CHILD = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn(1)!r}])"


def test_reads_busy_and_stolen_time(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 5 50 1000 10 3 2 7 4 0\ncpu0 50 2 25 500 5 1 1 3 2 0\n")
    assert cpu.read(stat) == cpu.Counters(160 / HZ, 7 / HZ)
    stat.write_text("cpu  100 5 50 1000\n")  # an old kernel: no irq, softirq, steal
    assert cpu.read(stat) == cpu.Counters(155 / HZ, 0.0)
    assert cpu.read(tmp_path / "missing") is None


def test_others_is_busy_time_not_the_runs_plus_steal() -> None:
    before, after = cpu.Counters(10.0, 1.0), cpu.Counters(16.0, 1.5)
    assert cpu.others(before, after, own=4.0) == pytest.approx(2.5)
    # The counters tick at 100 Hz: a run's exact time may pass the busy difference.
    assert cpu.others(before, after, own=6.01) == pytest.approx(0.5)
    assert cpu.others(None, after, own=1.0) is None
    assert cpu.others(before, after, own=None) is None


def test_share_is_of_every_core_over_the_wall() -> None:
    cores = os.cpu_count() or 1
    sample = Sample(wall=2.0, rss_mb=1.0, exit_code=0, others_s=float(cores))
    assert others_pct(sample) == pytest.approx(50.0)
    assert others_pct(Sample(wall=2.0, rss_mb=1.0, exit_code=0)) is None


SLEEP_1S = "import time; time.sleep(1)"


@pytest.mark.skipif(cpu.read() is None, reason="no /proc/stat")
def test_a_runs_own_cpu_includes_its_children_and_is_not_other_work() -> None:
    burnt, _ = measure([sys.executable, "-c", BURN_IN_CHILD])
    slept, _ = measure([sys.executable, "-c", SLEEP_1S])  # the same machine, idle run
    assert burnt.exit_code == 0
    assert burnt.cpu_s is not None
    assert burnt.cpu_s >= 0.9
    assert burnt.others_s is not None
    assert slept.others_s is not None
    # Taken for other work, the burnt second would show above what an idle run sees.
    assert burnt.others_s - slept.others_s < 0.5


@pytest.mark.skipif(cpu.read() is None, reason="no /proc/stat")
def test_work_beside_a_run_shows_as_others() -> None:
    beside = subprocess.Popen([sys.executable, "-c", burn(1.5)])
    try:
        sample, _ = measure([sys.executable, "-c", SLEEP_1S])
    finally:
        beside.wait()
    assert sample.cpu_s is not None
    assert sample.cpu_s < 0.5
    assert sample.others_s is not None
    assert sample.others_s >= 0.7
