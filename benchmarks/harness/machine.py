"""The machine a run measured, and which CPUs the servers and the load generator get."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pinning:
    """CPU sets: a server on one core, the load generator on another, when there are two."""

    server: frozenset[int] | None
    loadgen: frozenset[int] | None
    all: frozenset[int] | None

    @property
    def active(self) -> bool:
        """True when servers and load generator really run on separate cores."""
        return self.server is not None

    def describe(self) -> str:
        """One line for the report."""
        if not self.active:
            return "no CPU pinning (needs 2 usable cores and sched_setaffinity)"
        return (
            f"each server pinned to CPU {fmt_cpus(self.server)}, "
            f"load generator to CPU {fmt_cpus(self.loadgen)} (except where noted)"
        )


def fmt_cpus(cpus: frozenset[int] | None) -> str:
    """``{0, 1}`` as ``0,1``."""
    return ",".join(map(str, sorted(cpus or ())))


def usable_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on, or None where affinity is not supported."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return frozenset(os.sched_getaffinity(0))


def plan_pinning(enabled: bool = True) -> Pinning:
    """Server on the first usable CPU, load generator on the second; none with fewer than two."""
    cpus = usable_cpus()
    if not enabled or cpus is None or len(cpus) < 2:
        return Pinning(None, None, cpus)
    first, second = sorted(cpus)[:2]
    return Pinning(frozenset({first}), frozenset({second}), cpus)


def pin(pid: int, cpus: frozenset[int] | None) -> bool:
    """Restrict ``pid`` (and the threads and children it creates from now on) to ``cpus``."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True


def load_average() -> str:
    """The 1-minute load average, as text ("unknown" where the OS does not say)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    """Total memory, from /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def git_revision(root: Path) -> str:
    """The commit measured, with ``+dirty`` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_info(root: Path) -> dict[str, str]:
    """What the report says about the machine."""
    cpus = usable_cpus()
    memory = memory_gib()
    return {
        "cpu": cpu_model(),
        "cores": f"{len(cpus) if cpus else os.cpu_count()} usable of {os.cpu_count()} logical",
        "memory": f"{memory:.1f} GiB" if memory else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "commit": git_revision(root),
    }
