"""``producer watch`` as a person sees it: under tmux against a running pipeline
(PostgreSQL, moto's SQS over HTTP, a worker), and as plain lines through a pipe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import Transfer, TransferClient
from sandbox.sqs import LocalSqs, Queues
from tests.support import running_worker
from tests.test_send_load import open_accounts
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TMUX = shutil.which("tmux")


@pytest.fixture
def pipeline(
    local_sqs: LocalSqs, queues: Queues, settings: Settings, database_url: str
) -> Iterator[dict[str, str]]:
    """A worker consuming while a sender keeps putting transfers (10 accounts, some
    overdrawn) on the queue; yields the environment a producer command needs."""
    open_accounts(database_url, 10, "5")
    worker = settings.model_copy(update={"queue_url": queues.queue_url, "receive_wait_s": 1})
    stop = threading.Event()

    def send() -> None:
        client = TransferClient(local_sqs.client(), queues.queue_url)
        payer = 0
        while not stop.is_set():
            client.send_many(
                Transfer(1 + (payer + i) % 10, 1 + (payer + i + 1) % 10, "1000" if i == 0 else "1")
                for i in range(10)
            )
            payer += 1
            stop.wait(0.2)

    sender = threading.Thread(target=send, daemon=True)
    with running_worker(worker):
        sender.start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DSQL_", "QUEUE_"))},
            **local_sqs.env(),
            "DATABASE_URL": database_url,
            "QUEUE_URL": queues.queue_url,
            "DLQ_URL": queues.dlq_url,
        }
        try:
            yield env
        finally:
            stop.set()
            sender.join(10)


def tmux(*args: str) -> str:
    assert TMUX is not None
    return subprocess.run(
        [TMUX, *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")
@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_watch_under_tmux_shows_the_live_pipeline_and_quits_cleanly(
    pipeline: dict[str, str], quit_key: str
) -> None:
    """In a 100x30 terminal the screen fills with committed and rejected rates, latency
    and queue figures; q (or Ctrl-C) ends it with exit 0 and the shell's screen back."""
    session = f"watch-{uuid.uuid4().hex[:8]}"
    env_args = [arg for k, v in pipeline.items() for arg in ("-e", f"{k}={v}")]
    tmux(
        "new-session", "-d", "-s", session, "-x", "100", "-y", "30", *env_args,
        "-c", str(ROOT), f"{sys.executable} -m producer watch --interval 1; echo EXIT=$?; sleep 30",
    )  # fmt: skip
    try:
        screen, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", session)
            if "committed" in screen and "insufficient_funds" in screen and "in flight" in screen:
                break
            time.sleep(0.5)
        assert "committed" in screen, screen
        assert "insufficient_funds" in screen, screen
        assert "transaction" in screen
        assert "end to end" in screen
        assert "DLQ" in screen
        committed = next(line for line in screen.splitlines() if "committed" in line).split()
        assert float(committed[1]) > 0, screen  # results per second
        tmux("send-keys", "-t", session, quit_key)
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", session)
            if "EXIT=" in screen:
                break
            time.sleep(0.2)
        assert "EXIT=0" in screen, screen
        assert "q quits" not in screen  # the alternate screen is gone
        assert "Traceback" not in screen
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], check=False, timeout=10)


def test_watch_through_a_pipe_prints_plain_lines(pipeline: dict[str, str]) -> None:
    """Not on a terminal: one plain line per refresh, no escape codes, --count N lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "producer", "watch", "--interval", "0.5", "--count", "3"],
        cwd=ROOT, env=pipeline, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert "\x1b" not in proc.stdout
    for line in lines:
        assert "results=" in line
        assert "queue=" in line
        assert "dlq=0" in line
