"""`make demo`'s path, end to end, with smaller numbers: the suite runs what users run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_pipeline_and_exits_zero() -> None:
    """migrate, setup, a worker process, load --wait and audit: exit 0, every transfer
    has an outcome, the audit is clean, and the worker drains on SIGTERM."""
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "--iters", "200", "--threads", "4",
         "--accounts", "10", "--setup-accounts", "100"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "demo OK" in output
    assert "  sent            200" in output
    assert "  failed          0 (0.00 %)" in output
    assert "AUDIT ok" in output
    log_dir = Path(output.split("==> worker logs: ")[1].split()[0])
    worker_log = (log_dir / "worker-1.log").read_text()
    assert '"worker stopped"' in worker_log
    assert worker_log.count('"event": "transfer"') == 200
