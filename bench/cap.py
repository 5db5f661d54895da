"""Run a benchmark command under a hard memory cap (a Linux memory cgroup).

``capped(cap_bytes)`` makes a fresh memory cgroup limited to ``cap_bytes`` and yields
it; ``group.command(cmd)`` is the command to run instead of ``cmd``: a shell that moves
itself into the group and then execs ``cmd``, so the command and every process it
starts are held to the cap. Exceeding it gets a process killed by the kernel's OOM
killer (``group.oom_kills()`` counts them), so a run that completes with no kill has
stayed under it. On leaving, processes left in the group (ours) are killed and the
group is removed.

The group is made inside the runner's own memory cgroup (read from
``/proc/self/cgroup``), never beside it: the capped processes stay accounted and
limited wherever the runner is. cgroup v1 (``memory.limit_in_bytes``, as on the bench
machine) or v2 (``memory.max``, when the controller is delegated to the runner's group);
creating a group needs root or a delegated group. ``probe`` says why a cap cannot be
had, and the caller then reports the cap as not enforced.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import count
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1 = ROOT / "memory"
_serial = count()


def _own_path(version: int) -> str:
    """This process's cgroup path in the v1 memory hierarchy or the v2 one."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, controllers, path = line.split(":", 2)
        if version == 1 and "memory" in controllers.split(","):
            return path
        if version == 2 and num == "0" and controllers == "":
            return path
    raise OSError(f"not in a cgroup v{version} memory hierarchy (/proc/self/cgroup)")


def _parent(version: int) -> Path:
    if version == 1:
        return V1 / _own_path(1).lstrip("/")
    return ROOT / _own_path(2).lstrip("/")


def _version() -> int:
    """1 or 2: where the memory controller is available to this process."""
    if (V1 / "memory.limit_in_bytes").exists():
        return 1
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        parent = _parent(2)
        if "memory" in (parent / "cgroup.subtree_control").read_text().split():
            return 2
        raise OSError(f"the memory controller is not delegated to {parent}")
    raise OSError("no memory cgroup controller available")


@dataclass
class Group:
    path: Path
    version: int
    cap_bytes: int

    def command(self, cmd: list[str]) -> list[str]:
        procs = shlex.quote(str(self.path / "cgroup.procs"))
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "capped", *cmd]

    def how(self) -> str:
        limit = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        return (
            f"a fresh memory cgroup v{self.version} for each run, {self.path.parent}/"
            f"recon-bench-* ({limit} = {self.cap_bytes} bytes, no swap), made inside the "
            "runner's own cgroup; the kernel's OOM killer kills a process that would exceed it"
        )

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def oom_kills(self) -> int:
        """Processes the kernel killed for exceeding the cap."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        """The group's peak charge: process memory and page cache (which the kernel
        reclaims before it kills), so it sits near the cap on any run reading big files."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int(self._read(name).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self._read("cgroup.procs").split()]
        except OSError:
            return []

    def remove(self) -> None:
        """Kill what is left in the group (processes this run started) and remove it."""
        for _ in range(50):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # busy for a moment after the last process exits
                time.sleep(0.1)
        self.path.rmdir()


def make_group(cap_bytes: int, name: str | None = None) -> Group:
    """A fresh memory cgroup inside this process's own, limited to ``cap_bytes``."""
    version = _version()
    group = _parent(version) / (name or f"recon-bench-{os.getpid()}-{next(_serial)}")
    group.mkdir()
    try:
        if version == 1:
            (group / "memory.limit_in_bytes").write_text(str(cap_bytes))
            memsw = group / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # with swap accounting: no swapping past the cap either
                memsw.write_text(str(cap_bytes))
            (group / "memory.max_usage_in_bytes").write_text("0")
        else:
            (group / "memory.max").write_text(str(cap_bytes))
            swap = group / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
    except OSError:
        group.rmdir()
        raise
    return Group(group, version, cap_bytes)


@contextmanager
def capped(cap_bytes: int) -> Iterator[Group]:
    group = make_group(cap_bytes)
    try:
        yield group
    finally:
        group.remove()


def probe(cap_bytes: int) -> tuple[str | None, str]:
    """(why a cap cannot be enforced, or None; how it is enforced when it can)."""
    try:
        with capped(cap_bytes) as group:
            return None, group.how()
    except OSError as exc:
        return f"not enforced: {exc}", ""


def parse_size(text: str) -> int:
    """``4GiB``, ``4G``, ``512MiB``, ``1.5g`` -> bytes (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b").strip()
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 4GiB, 512MiB)") from None


def show_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"
