"""The system under test: worker OS processes on one queue and one PostgreSQL.

Each worker is a real ``python -m worker run`` process with its own log file. The
cluster remembers how every process ended, so the checker can tell a worker we
killed on purpose from one that died of an unhandled exception.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Worker:
    """One worker process and how it ended."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health_file: Path
    killed: bool = False
    """We sent SIGKILL: any exit code is expected."""
    stopped_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Cluster:
    """Starts, stops and tracks worker processes."""

    env: dict[str, str]
    workdir: Path
    workers: list[Worker] = field(default_factory=list)
    _started: int = 0

    def start(self) -> Worker:
        """Start one more worker and return it (not waiting for it to be healthy)."""
        self._started += 1
        name = f"worker-{self._started}"
        log = self.workdir / f"{name}.log"
        health_file = self.workdir / f"{name}.alive"
        env = {**self.env, "HEALTH_FILE": str(health_file)}
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker = Worker(name, process, log, health_file)
        self.workers.append(worker)
        return worker

    def running(self) -> list[Worker]:
        """Workers still running (SIGSTOPped ones included)."""
        return [w for w in self.workers if w.alive]

    def ready(self, timeout_s: float = 30) -> list[Worker]:
        """Running workers that have touched their liveness file (start-up is over),
        waiting up to ``timeout_s`` for at least one. A signal that lands while the
        interpreter itself is still starting kills any Python process; that is not
        the worker's drain being tested."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready = [w for w in self.running() if w.health_file.exists()]
            if ready or time.monotonic() > deadline:
                return ready
            time.sleep(0.1)

    def kill(self, worker: Worker) -> None:
        """SIGKILL: no drain, no acknowledgement, nothing flushed."""
        worker.killed = True
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(10)

    def terminate(self, worker: Worker, timeout_s: float = 60) -> int:
        """SIGTERM and wait for the drain; returns the exit code."""
        worker.process.send_signal(signal.SIGTERM)
        try:
            return worker.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(worker)
            return -9

    def pause(self, worker: Worker, seconds: float) -> None:
        """SIGSTOP for ``seconds``, then SIGCONT (a GC pause, a noisy neighbour)."""
        os.kill(worker.process.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(worker.process.pid, signal.SIGCONT)

    def stop_all(self) -> None:
        """SIGTERM every running worker and wait for each to drain."""
        for worker in self.running():
            os.kill(worker.process.pid, signal.SIGCONT)
            self.terminate(worker)

    def unexpected_deaths(self) -> list[str]:
        """Workers that exited non-zero without being SIGKILLed, or logged a traceback."""
        problems = []
        for worker in self.workers:
            code = worker.process.poll()
            if not worker.killed and code not in (0, None):
                problems.append(f"{worker.name} exited with {code} (log: {worker.log})")
            text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
            if "Traceback" in text:
                problems.append(f"{worker.name} logged a traceback (log: {worker.log})")
        return problems
