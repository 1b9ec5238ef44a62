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
from sandbox.sqs import LocalSqs, Queues
from worker.contract import encode_body
from worker.db import connect
from worker.settings import Settings


def worker_env(
    settings: Settings, local_sqs: LocalSqs, queues: Queues, health: Path
) -> dict[str, str]:
    assert settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSQL_", "QUEUE_", "DLQ_"))}
    env.update(local_sqs.env())
    env.update(
        DATABASE_URL=settings.database_url.get_secret_value(),
        QUEUE_URL=queues.queue_url,
        DLQ_URL=queues.dlq_url,
        RECEIVE_WAIT_S="1",
        HEALTH_FILE=str(health),
        POOL_MAX_SIZE="4",
    )
    return env


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m worker health` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "health"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def wait_healthy(env: dict[str, str], proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while health(env).returncode:
        assert proc.poll() is None, "worker died during start-up"
        assert time.monotonic() < deadline, "worker never became healthy"
        time.sleep(0.2)


def test_sigterm_during_load_drains_and_loses_nothing(
    sqs_settings: Settings, local_sqs: LocalSqs, queues: Queues, tmp_path: Path
) -> None:
    """Two workers, one SIGTERMed mid-load: both exit 0, every transfer has exactly one
    result, and the audit is clean."""
    reset_accounts(sqs_settings, 10, Decimal(1000))
    envs = [worker_env(sqs_settings, local_sqs, queues, tmp_path / f"w{i}.alive") for i in range(2)]
    procs = [start(env, tmp_path / f"w{i}.log") for i, env in enumerate(envs)]
    for env, proc in zip(envs, procs, strict=True):
        wait_healthy(env, proc)
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
            procs[0].send_signal(signal.SIGTERM)
        time.sleep(0.02)
    assert procs[0].wait(40) == 0
    deadline = time.monotonic() + 60
    while True:
        with connect(sqs_settings) as conn:
            done = conn.execute("SELECT count(*) FROM transfer_results").fetchone()
        if done == (len(sent),):
            break
        assert time.monotonic() < deadline, f"only {done} of {len(sent)} results"
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    assert procs[1].wait(40) == 0
    with connect(sqs_settings) as conn:
        ids = {row[0] for row in conn.execute("SELECT transfer_id FROM transfer_results")}
        report = run_audit(conn)
    assert ids == set(sent)
    assert report.violations == []
    assert report.committed_transfers == len(sent)
    first_log = (tmp_path / "w0.log").read_text()
    assert "signal received, draining" in first_log
    assert '"worker stopped"' in first_log
    assert "Traceback" not in first_log + (tmp_path / "w1.log").read_text()


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
