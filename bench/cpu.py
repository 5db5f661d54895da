"""How much of the machine a timed run did not have: its CPU counters around the run.

``/proc/stat`` counts, since boot, the time all CPUs were busy (user, nice, system, irq,
softirq; guest time is inside user) and the time the hypervisor gave them to other
guests (steal). Over a run, the busy time the run did not spend itself, plus the time
stolen, is capacity something else had: other processes, the benchmark runner's own
sampling, other guests on the host. A 1-minute load average cannot tell this: right
after one run it still counts that run's own processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Counters:
    busy: float  # CPU-seconds all CPUs spent busy since boot
    steal: float  # CPU-seconds the hypervisor ran other guests on them


def read(stat: Path = STAT) -> Counters | None:
    """The machine's counters now; None where there is no ``/proc/stat``."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (older kernels stop earlier)
    v = [int(x) for x in fields[1:9]] + [0] * (9 - len(fields))
    hz = os.sysconf("SC_CLK_TCK")
    return Counters((v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz)


def others(before: Counters | None, after: Counters | None, own: float | None) -> float | None:
    """CPU-seconds that went to anything but the run (steal included), given the run's
    own CPU-seconds ``own``; None when either is unknown. The counters tick at 100 Hz,
    the run's time is exact: a difference below zero is rounding, and counts as none."""
    if before is None or after is None or own is None:
        return None
    return max(0.0, after.busy - before.busy - own) + max(0.0, after.steal - before.steal)
