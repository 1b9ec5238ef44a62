"""Worker processes, started as a user starts them: the one harness for every caller.

The demo, the fault suite, the bench and the tests all run ``python -m worker run`` as
real OS processes, composed the same way: a child environment that points at the
local PostgreSQL and SQS (:func:`child_environment`), one log and one health file per
process, "healthy" meaning the worker wrote its health file (its pollers reached SQS),
SIGTERM to stop it as ECS does, and a record of how each process ended so that a
worker killed on purpose is told apart from one that died of an unhandled exception.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from sandbox.sqs import LocalSqs, Queues

ROOT = Path(__file__).resolve().parent.parent
WORKER_COMMAND: tuple[str, ...] = ("-m", "worker", "run")
_OWN_VARIABLES = ("DSQL_", "QUEUE_", "DLQ_", "DATABASE_URL", "HEALTH_FILE")


class ProcessFailed(RuntimeError):
    """A worker did not start, or did not stop, as it should."""


def child_environment(
    database_url: str,
    sqs: LocalSqs | None = None,
    queues: Queues | None = None,
    **settings: object,
) -> dict[str, str]:
    """This process's environment without any database, queue or health setting of its
    own, pointed at ``database_url`` and the local SQS; ``settings`` are Settings
    fields by name (``receive_wait_s=1`` becomes ``RECEIVE_WAIT_S=1``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_VARIABLES)}
    env["DATABASE_URL"] = database_url
    if sqs is not None:
        env.update(sqs.env())
    if queues is not None:
        env.update(QUEUE_URL=queues.queue_url, DLQ_URL=queues.dlq_url)
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


@dataclass
class WorkerProcess:
    """One worker process and how it ended."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health_file: Path
    killed: bool = False
    """We sent SIGKILL: any exit code is expected."""

    @property
    def alive(self) -> bool:
        """Still running (a SIGSTOPped process included)."""
        return self.process.poll() is None

    @property
    def healthy(self) -> bool:
        """Running, and past start-up: it has written its health file."""
        return self.alive and self.health_file.exists()

    def wait_healthy(self, timeout_s: float = 60) -> None:
        """Until start-up is over; raises :class:`ProcessFailed` if it exits or stalls."""
        deadline = time.monotonic() + timeout_s
        while not self.healthy:
            if not self.alive:
                raise ProcessFailed(
                    f"{self.name} exited with {self.process.returncode}; see {self.log}"
                )
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name} never became healthy; see {self.log}")
            time.sleep(0.1)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM (continuing it first if paused), wait for the drain; the exit code
        (-9 when it had to be killed)."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        """SIGKILL: no drain, no acknowledgement, nothing flushed."""
        self.killed = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def pause(self, seconds: float) -> None:
        """SIGSTOP for ``seconds``, then SIGCONT (a GC pause, a noisy neighbour)."""
        os.kill(self.process.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(self.process.pid, signal.SIGCONT)

    def log_text(self) -> str:
        """What it wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class WorkerFleet:
    """Starts, tracks and stops worker processes; a context manager that stops them all."""

    env: Mapping[str, str]
    workdir: Path
    command: Sequence[str] = WORKER_COMMAND
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self, **settings: object) -> WorkerProcess:
        """One more worker (not waiting for it); ``settings`` as in
        :func:`child_environment`, on top of the fleet's environment."""
        name = f"worker-{len(self.workers) + 1}"
        log = self.workdir / f"{name}.log"
        health_file = self.workdir / f"{name}.alive"
        health_file.unlink(missing_ok=True)
        env = {
            **self.env,
            "HEALTH_FILE": str(health_file),
            **{key.upper(): str(value) for key, value in settings.items()},
        }
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                [sys.executable, *self.command],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        worker = WorkerProcess(name, process, log, health_file)
        self.workers.append(worker)
        return worker

    def start_healthy(self, count: int, timeout_s: float = 60) -> list[WorkerProcess]:
        """``count`` more workers, returned once every one of them is healthy."""
        started = [self.start() for _ in range(count)]
        for worker in started:
            worker.wait_healthy(timeout_s)
        return started

    def running(self) -> list[WorkerProcess]:
        """Workers still running (SIGSTOPped ones included)."""
        return [w for w in self.workers if w.alive]

    def ready(self, timeout_s: float = 30) -> list[WorkerProcess]:
        """Running workers past start-up, waiting up to ``timeout_s`` for at least one.

        A signal that lands while the interpreter itself is still starting kills any
        Python process; that is not the worker's drain being tested."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready = [w for w in self.running() if w.health_file.exists()]
            if ready or time.monotonic() > deadline:
                return ready
            time.sleep(0.1)

    def stop_all(self, timeout_s: float = 60) -> list[int]:
        """SIGTERM every worker still running and wait for each drain; every worker's
        exit code, in start order (so one that died earlier is not missed)."""
        return [worker.terminate(timeout_s) for worker in self.workers]

    def unexpected_deaths(self) -> list[str]:
        """Workers that exited non-zero without being SIGKILLed, or logged a traceback."""
        problems = []
        for worker in self.workers:
            code = worker.process.poll()
            if not worker.killed and code not in (0, None):
                problems.append(f"{worker.name} exited with {code} (log: {worker.log})")
            if "Traceback" in worker.log_text():
                problems.append(f"{worker.name} logged a traceback (log: {worker.log})")
        return problems

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop_all()
