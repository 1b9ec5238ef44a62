"""SIGTERM at any moment of a worker's life ends in a clean exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sandbox.processes import WorkerFleet, child_environment
from sandbox.sqs import LocalSqs, Queues
from worker.settings import Settings


def wait_until_catching_sigterm(pid: int, timeout_s: float = 10) -> None:
    """Poll /proc until the process has a handler for SIGTERM (SigCgt bit 15)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(
            next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
        )
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    raise AssertionError("the worker never installed a SIGTERM handler")


def test_sigterm_during_start_up_still_exits_zero(
    sqs_settings: Settings, local_sqs: LocalSqs, queues: Queues, tmp_path: Path
) -> None:
    """A worker stopped while it is still importing drains (nothing) and exits 0."""
    assert sqs_settings.database_url is not None
    env = child_environment(
        sqs_settings.database_url.get_secret_value(), local_sqs, queues, receive_wait_s=1
    )
    fleet = WorkerFleet(env, tmp_path)
    for delay in (0.0, 0.3, 0.8):
        worker = fleet.start()
        # The earliest moment Python code can catch anything: the handler is installed
        # (before that, the interpreter itself is still starting and SIGTERM kills it).
        wait_until_catching_sigterm(worker.process.pid)
        time.sleep(delay)
        assert worker.terminate() == 0, (delay, worker.log_text()[-2000:])


def test_other_commands_stop_on_sigterm_as_usual(tmp_path: Path) -> None:
    """Only `run` drains: `worker health` under SIGTERM is not kept alive by it."""
    env = {**os.environ, "HEALTH_FILE": str(tmp_path / "absent")}
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "health"], env=env, capture_output=True, check=False
    )
    assert proc.returncode == 1
