"""``WORKER_PROCESSES=N``: N consumer processes in one container, one drain on SIGTERM.

One Python process tops out near one core (the GIL), so a task with several vCPUs
runs one consumer per vCPU. The supervisor is the container's main process: it starts
the N consumers as ``python -m worker run`` children (each with its own pool and its
own health file), and

- forwards SIGTERM/SIGINT to every child, so they all drain at once and the task stops
  within one ``DRAIN_TIMEOUT_S``;
- writes the container's health file while every child's is fresh (ready while every
  child is ready), so ``python -m worker health`` means the same as with one process;
- if a child dies unasked, stops the others and exits 1: a half-dead task is better
  replaced by the orchestrator than kept at a fraction of its capacity. Nothing is
  lost: the dead child's messages come back after their visibility timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import structlog

from worker import shutdown
from worker.settings import Settings
from worker.transport.health import write_health

log = structlog.get_logger(__name__)

STOP_MARGIN_S = 5.0
"""How much longer than DRAIN_TIMEOUT_S the children get to exit after SIGTERM."""


def child_health_file(settings: Settings, index: int) -> Path:
    """Where child ``index`` writes its health."""
    return Path(f"{settings.health_file}.{index}")


def run_processes(settings: Settings) -> int:
    """Start ``WORKER_PROCESSES`` consumers, supervise them, drain them together."""
    count = settings.worker_processes
    # The children get this process's environment (their settings) with one consumer
    # each and a health file of their own.
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env={
                **os.environ,
                "WORKER_PROCESSES": "1",
                "HEALTH_FILE": str(child_health_file(settings, i)),
            },
        )
        for i in range(count)
    ]
    stopping = threading.Event()

    def on_signal(name: str) -> None:
        log.info("signal received, draining every worker process", signal=name)
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    shutdown.on_request(on_signal)
    log.info("worker processes started", processes=count, pids=[c.pid for c in children])
    failed = False
    while not stopping.wait(1.0):
        dead = [c for c in children if c.poll() is not None]
        if dead:
            log.error(
                "a worker process exited unasked; stopping the others",
                exit_codes=[c.returncode for c in dead],
            )
            failed = True
            on_signal("child exited")
            break
        _write_health(settings, count)
    codes = _wait(children, settings.drain_timeout_s + STOP_MARGIN_S)
    Path(settings.health_file).unlink(missing_ok=True)
    log.info("worker processes stopped", exit_codes=codes)
    return 1 if failed or any(codes) else 0


def _write_health(settings: Settings, count: int) -> None:
    """The container's health file, while every child's is fresh; ready if all are."""
    ready = True
    for index in range(count):
        path = child_health_file(settings, index)
        try:
            age = time.time() - path.stat().st_mtime
            state = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            return
        if age > settings.health_max_age_s:
            return
        ready = ready and bool(state.get("ready", True))
    write_health(Path(settings.health_file), ready=ready)


def _wait(children: list[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    codes = []
    for child in children:
        try:
            codes.append(child.wait(max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return codes
