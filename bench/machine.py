"""Where the numbers came from: the machine, the software, and how busy the machine was.

The bench runs on shared machines; :class:`Busy` records how much CPU the whole
machine used during a measurement (ours and anybody else's), so a reader can tell a
quiet run from a noisy one.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def describe() -> dict[str, object]:
    """CPU model, cores, memory, kernel, Python, package versions, git commit."""
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": {
            name: version(name) for name in ("psycopg", "psycopg-pool", "moto", "boto3", "pgserver")
        },
        "git_commit": _git(["rev-parse", "--short", "HEAD"]),
        "uncommitted_changes": bool(
            _git(["status", "--porcelain", "worker", "producer", "sandbox"])
        ),
    }


def loadavg() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


@dataclass(frozen=True)
class CpuTimes:
    """A /proc/stat snapshot: busy and total jiffies over all CPUs."""

    busy: int
    total: int
    at: float


def cpu_times() -> CpuTimes:
    """Now's cumulative CPU times of the whole machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return CpuTimes(busy=total - idle, total=total, at=time.monotonic())


class Busy:
    """Machine-wide CPU use between :meth:`start` and :meth:`stop`, in percent of all
    cores, and the load average at both ends."""

    def __init__(self) -> None:
        self._start = cpu_times()
        self._load = loadavg()

    def stop(self) -> dict[str, float]:
        """``cpu_busy_pct``, ``loadavg_start``, ``loadavg_end``."""
        end = cpu_times()
        total = max(end.total - self._start.total, 1)
        return {
            "cpu_busy_pct": round(100 * (end.busy - self._start.busy) / total, 1),
            "loadavg_start": round(self._load, 2),
            "loadavg_end": round(loadavg(), 2),
        }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _git(args: list[str]) -> str | None:
    """Output of a read-only git command in the repository, or None."""
    try:
        proc = subprocess.run(  # noqa: S603 - fixed read-only git queries
            ["git", *args],  # noqa: S607 - PATH's git
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None
