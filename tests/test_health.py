"""Liveness and readiness from the health file, and the HoldingBack metric."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from worker.dispatch.metrics import Metrics
from worker.engine.availability import Availability
from worker.ops.cli import main
from worker.transport.health import write_health


@pytest.fixture
def health_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "alive"
    monkeypatch.setenv("HEALTH_FILE", str(path))
    monkeypatch.setenv("HEALTH_MAX_AGE_S", "5")
    return path


def test_a_worker_holding_back_is_alive_but_not_ready(
    health_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`health` (the container HEALTHCHECK) passes while the worker holds back, so ECS does
    not restart it into the same outage; `health --ready` fails until it takes work."""
    write_health(health_file, ready=False)
    assert main(["health"]) == 0
    assert "holding back" in capsys.readouterr().out
    assert main(["health", "--ready"]) == 1
    assert "not ready" in capsys.readouterr().out
    write_health(health_file, ready=True)
    assert main(["health", "--ready"]) == 0
    assert json.loads(health_file.read_text())["ready"] is True


def test_a_stale_or_missing_heartbeat_fails_both_checks(health_file: Path) -> None:
    """No file, or one older than HEALTH_MAX_AGE_S: neither alive nor ready."""
    assert main(["health"]) == 1
    write_health(health_file, ready=True)
    old = time.time() - 60
    os.utime(health_file, (old, old))
    assert main(["health"]) == 1
    assert main(["health", "--ready"]) == 1


def test_availability_goes_down_once_and_comes_back_on_a_probe() -> None:
    """unreachable() flips the state once (further reports change nothing), a failing
    probe keeps it down, a succeeding one brings it back; listeners hear each change."""
    answers = [RuntimeError("refused"), None]
    changes: list[bool] = []

    def probe() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    availability = Availability(probe, on_change=changes.append)
    assert not availability.down
    availability.unreachable("refused")
    availability.unreachable("refused again")
    assert availability.down
    assert not availability.wait_up(0.01)
    assert availability.probe_once() is False
    assert availability.down
    assert availability.probe_once() is True
    assert not availability.down
    assert changes == [True, False]


def test_holding_back_is_reported_every_interval_even_without_traffic() -> None:
    """While holding back each flush emits HoldingBack=1 (an alarm sees the outage, not
    missing data); the first interval after recovery still says 1, then 0 and idle."""
    lines: list[str] = []
    metrics = Metrics(emit=lines.append)
    assert metrics.flush() is None
    metrics.holding_back(True)
    first, second = metrics.flush(), metrics.flush()
    metrics.holding_back(False)
    recovered, idle = metrics.flush(), metrics.flush()
    assert [d and d["HoldingBack"] for d in (first, second, recovered)] == [1, 1, 1]
    assert idle is None
    assert first is not None
    names = [m["Name"] for m in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "HoldingBack" in names
    assert len(lines) == 3
