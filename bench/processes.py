"""Worker and producer processes, started exactly as a user starts them.

``python -m worker run`` and ``python -m producer load`` run as their own OS processes
with the environment ``sandbox.demo`` composes (the embedded PostgreSQL, moto's SQS);
the bench process only hosts moto and watches. :class:`RssSampler` follows a worker's
resident memory from ``/proc``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.processes import (
    ROOT,
    WORKER_COMMAND,
    ProcessFailed,
    WorkerFleet,
    WorkerProcess,
    child_environment,
)
from sandbox.sqs import LocalSqs, Queues

__all__ = ["ROOT", "WORKER_COMMAND", "ProcessFailed", "SampledWorkers", "base_env"]


def base_env(database_url: str, sqs: LocalSqs, queues: Queues) -> dict[str, str]:
    """The demo's environment: PostgreSQL, moto, the queue and its DLQ; short long-polls
    as in the demo (a busy queue answers at once anyway, and SIGTERM waits for
    in-flight receives)."""
    return child_environment(database_url, sqs, queues, receive_wait_s=1)


@dataclass
class SampledWorkers:
    """The worker processes of one bench run, their RSS sampled from when they are healthy."""

    fleet: WorkerFleet
    samplers: dict[str, RssSampler] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        env: dict[str, str],
        workdir: Path,
        count: int,
        *,
        command: Sequence[str] = WORKER_COMMAND,
        **settings: object,
    ) -> SampledWorkers:
        """``count`` workers (``settings`` as in the harness), healthy and sampled."""
        fleet = WorkerFleet(env, workdir, command)
        for _ in range(count):
            fleet.start(**settings)
        started = cls(fleet)
        try:
            for worker in fleet.workers:
                worker.wait_healthy()
                started.samplers[worker.name] = RssSampler(worker.process.pid)
                started.samplers[worker.name].start()
        except ProcessFailed:
            fleet.stop_all()
            raise
        return started

    @property
    def workers(self) -> list[WorkerProcess]:
        """The processes, in start order."""
        return self.fleet.workers

    def rss(self, worker: WorkerProcess) -> RssSampler:
        """The sampler of ``worker``."""
        return self.samplers[worker.name]

    def stop(self) -> list[int]:
        """SIGTERM (as ECS does), wait for the drains; the exit codes."""
        for sampler in self.samplers.values():
            sampler.stop()
        return self.fleet.stop_all(timeout_s=40)


def producer_load(
    env: dict[str, str],
    *,
    iters: int,
    threads: int,
    accounts: int,
    max_backlog: int,
    wait: bool,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """``python -m producer load ... --json`` (with ``--wait`` when asked); its JSON."""
    argv = [
        sys.executable, "-m", "producer", "load",
        "--iters", str(iters), "--threads", str(threads), "--accounts", str(accounts),
        "--max-backlog", str(max_backlog), "--timeout", str(timeout_s), "--json",
    ]  # fmt: skip
    if wait:
        argv.append("--wait")
    proc = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
        argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise ProcessFailed(f"producer load exited {proc.returncode}: {proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


class RssSampler:
    """Samples a process's VmRSS every ``interval_s``; VmHWM is the kernel's own peak."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> None:
        """Start sampling in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Take a last reading and stop."""
        self._read()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self, since: float | None = None) -> dict[str, float | None]:
        """Peak (VmHWM) and median VmRSS in MiB, the median over samples after ``since``
        (a ``time.monotonic()`` value: the steady state) when given."""
        steady = [kib for at, kib in self.samples if since is None or at >= since]
        return {
            "peak_mib": self.peak_kib / 1024 if self.peak_kib else None,
            "steady_median_mib": statistics.median(steady) / 1024 if steady else None,
            "samples": len(self.samples),
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def _read(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        values = {
            line.split(":")[0]: int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("VmRSS:", "VmHWM:"))
        }
        if "VmRSS" in values:
            self.samples.append((time.monotonic(), values["VmRSS"]))
        self.peak_kib = max(self.peak_kib, values.get("VmHWM", 0))
