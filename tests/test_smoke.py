"""``python -m producer smoke``: the same script a user runs against DSQL, here on
PostgreSQL (embedded when nothing is configured)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from producer import smoke
from worker.contract import TransferRequest
from worker.engine import TransferEngine
from worker.outcomes import Status, TransferResult
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_passes_on_the_embedded_postgres_when_nothing_is_configured() -> None:
    """No DSQL_ENDPOINT, no DATABASE_URL: it starts its own PostgreSQL, runs every step in
    a throwaway schema, prints each step ok and PASS, and exits 0."""
    env = {k: v for k, v in os.environ.items() if k not in {"DSQL_ENDPOINT", "DATABASE_URL"}}
    run = subprocess.run(
        [sys.executable, "-m", "producer", "smoke", "--transfers", "120", "--seed", "7"],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("SMOKE  postgres (embedded)  schema smoke_")
    steps = {line.split()[0]: line for line in lines[1:-1] if not line.startswith("    ")}
    for step in ("migrate", "setup", "transfers", "retries", "explain", "audit", "cleanup"):
        assert " ok  " in steps[step], steps[step]
    assert "committed=120" in steps["transfers"]
    assert "conflicting_duplicate=1" in steps["transfers"]
    assert "insufficient_funds=3" in steps["transfers"]
    assert lines[-1] == "PASS"


def test_smoke_fails_when_an_outcome_is_wrong_and_still_drops_its_schema(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine that commits what it should reject makes the report FAIL naming the
    transfers, and the throwaway schema is dropped all the same."""
    real_apply = TransferEngine.apply

    def lenient(self: TransferEngine, request: TransferRequest, **kwargs: Any) -> TransferResult:
        result = real_apply(self, request, **kwargs)
        return replace(result, status=Status.COMMITTED, reason=None) if result.reason else result

    monkeypatch.setattr(TransferEngine, "apply", lenient)
    report = smoke.run_smoke(
        Settings(database_url=SecretStr(server_url), log_level="WARNING"), transfers=30, seed=1
    )
    assert not report.passed
    assert any(f.startswith("transfers: ") and "expected rejected" in f for f in report.failures)
    assert report.render().endswith("FAIL\n")
    assert "cleanup       ok" in report.render()
