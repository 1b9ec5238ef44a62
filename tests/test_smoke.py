"""``python -m producer smoke``: the same script a user runs against DSQL, here on
PostgreSQL (embedded when nothing is configured)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from producer import smoke
from worker.contract import TransferRequest
from worker.engine import TransferEngine, attempt
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
    steps = step_lines(lines)
    for step in ("migrate", "setup", "explain", "audit", "cleanup", "engine"):
        assert " ok  " in steps[step], steps[step]
    for variant in ("single", "pipelined"):
        transfers = steps[f"transfers [{variant}]"]
        assert " ok  " in transfers
        assert "committed=120" in transfers
        assert "conflicting_duplicate=1" in transfers
        assert "insufficient_funds=3" in transfers
        assert " ok  " in steps[f"retries [{variant}]"]
    assert "ENGINE_STATEMENTS=single and pipelined" in steps["engine"]
    assert lines[-1] == "PASS"


def step_lines(lines: list[str]) -> dict[str, str]:
    """The report's step lines by step name (the text before its ok/FAIL)."""
    steps = {}
    for line in lines[1:-1]:
        for mark in (" ok  ", " FAIL  "):
            if mark in line and not line.startswith("    "):
                steps[line.split(mark)[0].strip()] = line
    return steps


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
    assert any(
        f.startswith("transfers [single]: ") and "expected rejected" in f for f in report.failures
    )
    assert report.render().endswith("FAIL\n")
    assert " ok  " in step_lines(report.render().splitlines())["cleanup"]


def test_smoke_says_which_engine_the_server_refuses(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses one way of sending a transfer (here the pipelined one fails
    with a syntax error) gets a FAIL naming it, and the engine line names the other."""
    real_apply = TransferEngine.apply

    def refuse_pipelined(
        self: TransferEngine, request: TransferRequest, **kwargs: Any
    ) -> TransferResult:
        if self._attempt is attempt.pipelined:
            raise psycopg.errors.SyntaxError('syntax error at or near "WITH"')
        return real_apply(self, request, **kwargs)

    monkeypatch.setattr(TransferEngine, "apply", refuse_pipelined)
    report = smoke.run_smoke(
        Settings(database_url=SecretStr(server_url), log_level="WARNING"), transfers=20, seed=2
    )
    steps = step_lines(report.render().splitlines())
    assert "refused: syntax error" in report.render()
    assert " FAIL  " in steps["transfers [pipelined]"]
    assert " ok  " in steps["transfers [single]"]
    assert "ENGINE_STATEMENTS=single" in steps["engine"]
    assert "pipelined" not in steps["engine"]
    assert not report.passed
