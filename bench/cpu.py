"""CPU seconds spent by each part of a run, to say which part limits it.

On a 2-core machine the worker, the producer, moto and PostgreSQL share the same
cores, so "who burned the CPU" is often the answer to "why is it not faster".
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (and of its reaped children when asked)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def postgres_cpu_s(data_dir: Path) -> float:
    """CPU seconds of the whole PostgreSQL server: the postmaster, its exited backends
    (reaped, so in its children's times) and its live backends."""
    postmaster = _postmaster(data_dir)
    if postmaster is None:
        return 0.0
    children = _children(postmaster)
    return process_cpu_s(postmaster, with_children=True) + sum(
        process_cpu_s(pid) for pid in children
    )


def settle_backends(data_dir: Path, expected: int, timeout_s: float = 3.0) -> None:
    """Wait until the server has at most ``expected`` child processes again: after a
    client disconnects, its backend's CPU reaches the postmaster's totals only once it
    has exited and been reaped."""
    postmaster = _postmaster(data_dir)
    deadline = time.monotonic() + timeout_s
    while postmaster is not None and time.monotonic() < deadline:
        if len(_children(postmaster)) <= expected:
            return
        time.sleep(0.02)


def backend_count(data_dir: Path) -> int:
    """The server's child processes now (background workers and backends)."""
    postmaster = _postmaster(data_dir)
    return len(_children(postmaster)) if postmaster is not None else 0


def _postmaster(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _children(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            children.append(int(entry.name))
    return children


def reaped_children_cpu_s() -> float:
    """CPU seconds of every child process this process has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_s() -> float:
    """CPU seconds of this process, all threads (here: moto's server threads)."""
    return time.process_time()
