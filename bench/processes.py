"""Worker and producer processes, started exactly as a user starts them.

``python -m worker run`` and ``python -m producer load`` run as their own OS processes
with the environment ``sandbox.demo`` composes (the embedded PostgreSQL, moto's SQS);
the bench process only hosts moto and watches. :class:`RssSampler` follows a worker's
resident memory from ``/proc``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.sqs import LocalSqs, Queues

ROOT = Path(__file__).resolve().parent.parent


class ProcessFailed(RuntimeError):
    """A worker or the load tool did not start or exited badly."""


def base_env(database_url: str, sqs: LocalSqs, queues: Queues) -> dict[str, str]:
    """The demo's environment: PostgreSQL, moto, the queue and its DLQ."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSQL_", "QUEUE_", "DLQ_"))}
    env.update(sqs.env())
    env.update(
        DATABASE_URL=database_url,
        QUEUE_URL=queues.queue_url,
        DLQ_URL=queues.dlq_url,
        # Short long-polls, as in the demo: a busy queue answers at once anyway, and
        # SIGTERM waits for in-flight receives.
        RECEIVE_WAIT_S="1",
    )
    return env


@dataclass
class Worker:
    """A running ``python -m worker run``."""

    process: subprocess.Popen[bytes]
    health_file: Path
    log_file: Path
    rss: RssSampler = field(init=False)

    def __post_init__(self) -> None:
        self.rss = RssSampler(self.process.pid)


WORKER_COMMAND = ("-m", "worker", "run")


def start_worker(
    env: dict[str, str],
    workdir: Path,
    index: int,
    extra: dict[str, str] | None = None,
    command: Sequence[str] = WORKER_COMMAND,
) -> Worker:
    """Start ``python -m worker run`` (or ``command``) with ``extra`` settings; logs go to
    ``workdir``."""
    health = workdir / f"worker-{index}.alive"
    health.unlink(missing_ok=True)
    log = workdir / f"worker-{index}.log"
    worker_env = {**env, "HEALTH_FILE": str(health), **(extra or {})}
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [sys.executable, *command],
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return Worker(process, health, log)


def wait_healthy(workers: Sequence[Worker], timeout_s: float = 60) -> None:
    """Until every worker has touched its liveness file (its pollers reached SQS)."""
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        while not worker.health_file.exists():
            if worker.process.poll() is not None:
                raise ProcessFailed(f"worker exited with {worker.process.returncode}")
            if time.monotonic() > deadline:
                raise ProcessFailed(f"worker never became healthy; see {worker.log_file}")
            time.sleep(0.1)
        worker.rss.start()


def stop_workers(workers: Sequence[Worker], timeout_s: float = 40) -> list[int]:
    """SIGTERM (as ECS does), wait for the drain; exit codes."""
    for worker in workers:
        worker.rss.stop()
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    codes = []
    for worker in workers:
        try:
            codes.append(worker.process.wait(timeout_s))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            codes.append(-9)
    return codes


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
