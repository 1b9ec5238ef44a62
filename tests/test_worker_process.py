"""`python -m worker run` as real OS processes: SIGTERM drains, nothing lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.processes import WorkerFleet, child_environment
from sandbox.sqs import LocalSqs, Queues
from tests.support import body, result_count, send, wait_for
from worker.contract import encode_body
from worker.db import connect
from worker.settings import Settings


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m worker health` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "health"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_sigterm_during_load_drains_and_loses_nothing(
    sqs_settings: Settings, local_sqs: LocalSqs, queues: Queues, tmp_path: Path
) -> None:
    """Two workers, one SIGTERMed mid-load: both exit 0, every transfer has exactly one
    result, and the audit is clean."""
    reset_accounts(sqs_settings, 10, Decimal(1000))
    assert sqs_settings.database_url is not None
    env = child_environment(
        sqs_settings.database_url.get_secret_value(),
        local_sqs,
        queues,
        receive_wait_s=1,
        pool_max_size=4,
    )
    fleet = WorkerFleet(env, tmp_path)
    first, second = fleet.start_healthy(2)
    # `worker health` agrees that both are alive.
    for worker in (first, second):
        assert health({**env, "HEALTH_FILE": str(worker.health_file)}).returncode == 0
    client = local_sqs.client()
    sent: list[uuid.UUID] = []
    for batch in range(30):
        entries = []
        for i in range(10):
            tid = uuid.uuid4()
            sent.append(tid)
            payer = 1 + (batch + i) % 10
            entries.append(
                {
                    "Id": str(i),
                    "MessageBody": encode_body(payer, 1 + payer % 10, Decimal("1.5"), tid),
                }
            )
        client.send_message_batch(QueueUrl=queues.queue_url, Entries=entries)
        if batch == 10:
            first.process.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    assert first.process.wait(40) == 0
    deadline = time.monotonic() + 60
    while True:
        with connect(sqs_settings) as conn:
            done = conn.execute("SELECT count(*) FROM transfer_results").fetchone()
        if done == (len(sent),):
            break
        assert time.monotonic() < deadline, f"only {done} of {len(sent)} results"
        time.sleep(0.2)
    assert second.terminate(40) == 0
    with connect(sqs_settings) as conn:
        ids = {row[0] for row in conn.execute("SELECT transfer_id FROM transfer_results")}
        report = run_audit(conn)
    assert ids == set(sent)
    assert report.violations == []
    assert report.committed_transfers == len(sent)
    first_log = first.log_text()
    assert "signal received, draining" in first_log
    assert '"worker stopped"' in first_log
    assert "Traceback" not in first_log + second.log_text()


def test_health_fails_without_a_running_worker(tmp_path: Path) -> None:
    """`worker health` exits 1 when no worker touched the liveness file."""
    env = {**os.environ, "HEALTH_FILE": str(tmp_path / "absent.alive")}
    probe = health(env)
    assert probe.returncode == 1
    assert "unhealthy" in probe.stdout
    stale = tmp_path / "stale.alive"
    stale.touch()
    os.utime(stale, (time.time() - 120, time.time() - 120))
    env["HEALTH_FILE"] = str(stale)
    assert health(env).returncode == 1


def test_worker_processes_share_one_container_and_drain_together(
    sqs_settings: Settings, local_sqs: LocalSqs, queues: Queues, tmp_path: Path
) -> None:
    """WORKER_PROCESSES=2: two consumer processes under one supervisor; its health file
    appears once both children are healthy, both apply transfers, and one SIGTERM to
    the supervisor drains both (exit 0, no process left behind)."""
    reset_accounts(sqs_settings, 20, Decimal(1000))
    assert sqs_settings.database_url is not None
    env = child_environment(
        sqs_settings.database_url.get_secret_value(),
        local_sqs,
        queues,
        receive_wait_s=1,
        pool_max_size=2,
        worker_processes=2,
    )
    (supervisor,) = WorkerFleet(env, tmp_path).start_healthy(1)
    children = [
        int(pid)
        for pid in Path(f"/proc/{supervisor.process.pid}/task/{supervisor.process.pid}/children")
        .read_text()
        .split()
    ]
    assert len(children) == 2
    ids = [uuid.uuid4() for _ in range(100)]
    send(
        local_sqs,
        queues.queue_url,
        [body(1 + i % 10, 11 + i % 10, "1", tid) for i, tid in enumerate(ids)],
    )
    wait_for(lambda: result_count(sqs_settings) == len(ids), 60, "every result")
    assert supervisor.terminate(40) == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    with connect(sqs_settings) as conn:
        appliers = conn.execute("SELECT count(*) FROM transfer_results").fetchone()
        assert appliers == (len(ids),)
        assert run_audit(conn).violations == []
    log = supervisor.log_text()
    assert '"worker processes started"' in log
    assert log.count('"worker stopped"') == 2  # each child drained
