"""``producer send`` and ``producer load``: moto's SQS over HTTP, a real PostgreSQL.

Where a consumer is needed the tests run the real worker in-process
(:func:`tests.helpers.running_worker`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any, cast

import psycopg
import pytest

from producer import TransferClient
from producer.cli import main
from producer.load import BacklogGate, SendReport, plan_transfers, send_transfers
from producer.sqs import ENTRY_RETRIES
from producer.stats import summarize_load
from producer.stats_format import format_load_stats, load_stats_as_dict
from sandbox.sqs import LocalSqs, Queues
from tests.support import running_worker
from worker.contract import TransferRequest, encode_body, parse_body
from worker.outcomes import Reason, Status, TransferResult
from worker.settings import Settings
from worker.transport.sqs import queue_depth, receive_all

ROOT = Path(__file__).resolve().parent.parent

LOAD_JSON_KEYS = {
    "requested", "sent", "not_sent", "not_sent_by_code", "send_s", "send_rate_per_s",
    "first_sent_at", "committed", "committed_pct", "rejected", "rejected_pct",
    "rejected_by_reason", "failed", "failed_pct", "attempts", "retries", "transaction_ms",
    "end_to_end_ms", "last_completed_at", "total_time_s", "throughput_per_s",
}  # fmt: skip


# --- fixtures and test helpers (local_sqs and queues come from conftest) ----------------


@pytest.fixture
def env(
    local_sqs: LocalSqs,
    queues: Queues,
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The environment of a producer pointed at moto and this test's migrated database."""
    variables = {**local_sqs.env(), "QUEUE_URL": queues.queue_url, "DATABASE_URL": database_url}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for name in ("QUEUE_NAME", "DSQL_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return variables


def worker_settings(env: dict[str, str]) -> Settings:
    """Settings for an in-process worker consuming the producer's queue."""
    return Settings(database_url=env["DATABASE_URL"], queue_url=env["QUEUE_URL"], receive_wait_s=1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def open_accounts(database_url: str, count: int, balance: str) -> None:
    """Accounts 1..count with ``balance`` each."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO accounts (id, balance) SELECT g, %s FROM generate_series(1, %s) g",
            (Decimal(balance), count),
        )


def drain(client: Any, queue_url: str) -> list[Any]:
    """Receive and delete every message on the queue, with its system attributes."""
    return receive_all(client, queue_url, delete=True)


class RefusingClient:
    """Test helper: a real SQS client whose SendMessageBatch refuses chosen entries.

    ``refuse(entry_id, attempt)`` returns None to send the entry, or whether the
    refusal is the sender's fault; refused entries are not sent and come back in
    ``Failed``, as SQS reports a partial failure. ``attempts`` counts tries per id.
    """

    def __init__(self, client: Any, refuse: Callable[[str, int], bool | None]) -> None:
        self._client = client
        self._refuse = refuse
        self.attempts: Counter[str] = Counter()

    def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> dict[str, Any]:  # noqa: N803 - boto3's names
        keep, failed = [], []
        for entry in Entries:
            self.attempts[entry["Id"]] += 1
            sender_fault = self._refuse(entry["Id"], self.attempts[entry["Id"]])
            if sender_fault is None:
                keep.append(entry)
            else:
                code = "InvalidParameterValue" if sender_fault else "InternalError"
                failed.append({"Id": entry["Id"], "SenderFault": sender_fault, "Code": code})
        response: dict[str, Any] = {"Successful": [], "Failed": []}
        if keep:
            response = self._client.send_message_batch(QueueUrl=QueueUrl, Entries=keep)
        return {**response, "Failed": [*response.get("Failed", []), *failed]}


def result(
    status: Status,
    *,
    attempts: int = 1,
    ms: float | None = None,
    enqueued_s: float = 0.0,
    completed_s: float = 1.0,
    reason: Reason | None = None,
) -> TransferResult:
    """A result enqueued and completed at the given seconds after T0."""
    return TransferResult(
        transfer_id=uuid.uuid4(),
        payer_id=1,
        payee_id=2,
        amount=Decimal(1),
        status=status,
        reason=reason,
        payer_balance=Decimal(9) if status is Status.COMMITTED else None,
        attempts=attempts,
        transaction_ms=ms,
        enqueued_at=T0 + timedelta(seconds=enqueued_s),
        completed_at=T0 + timedelta(seconds=completed_s),
    )


T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


# --- send ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("given_id", [True, False], ids=["given-id", "new-id"])
def test_send_puts_exactly_the_contract_body_on_the_queue(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, queues: Queues, given_id: bool
) -> None:
    """send enqueues one message whose body is encode_body(...) with the printed id."""
    transfer_id = uuid.uuid4()
    extra = ["--transfer-id", str(transfer_id)] if given_id else []
    code, out, _ = run(capsys, "send", "--payer", "3", "--payee", "7", "--amount", "12.34", *extra)
    assert code == 0
    printed = uuid.UUID(out.strip())
    if given_id:
        assert printed == transfer_id
    else:
        assert printed.version == 4
    (message,) = drain(local_sqs.client(), queues.queue_url)
    assert message["Body"] == encode_body(3, 7, Decimal("12.34"), printed)
    assert parse_body(message["Body"], message["MessageId"]) == TransferRequest(
        transfer_id=printed, payer_id=3, payee_id=7, amount=Decimal("12.34")
    )


@pytest.mark.usefixtures("env")
def test_send_resolves_queue_name_when_no_url(
    capsys: pytest.CaptureFixture[str],
    local_sqs: LocalSqs,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without QUEUE_URL, QUEUE_NAME is looked up with GetQueueUrl."""
    monkeypatch.delenv("QUEUE_URL")
    monkeypatch.setenv("QUEUE_NAME", queues.queue_url.rsplit("/", 1)[1])
    code, out, _ = run(capsys, "send", "--payer", "1", "--payee", "2", "--amount", "1")
    assert code == 0
    (message,) = drain(local_sqs.client(), queues.queue_url)
    assert parse_body(message["Body"], "").transfer_id == uuid.UUID(out.strip())


@pytest.mark.usefixtures("env")
def test_send_without_a_queue_says_what_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither QUEUE_URL nor QUEUE_NAME: exit 2 naming the variable, nothing printed."""
    monkeypatch.delenv("QUEUE_URL")
    code, out, err = run(capsys, "send", "--payer", "1", "--payee", "2", "--amount", "1")
    assert (code, out) == (2, "")
    assert "QUEUE_URL" in err


@pytest.mark.usefixtures("env")
def test_send_refuses_what_the_worker_would_dead_letter(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """An account id the contract calls malformed (0) exits 2 and sends nothing."""
    code, out, err = run(capsys, "send", "--payer", "0", "--payee", "2", "--amount", "1")
    assert (code, out) == (2, "")
    assert "payer_id" in err
    assert drain(local_sqs.client(), queues.queue_url) == []


def send_and_wait(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], database_url: str, amount: str
) -> tuple[int, str]:
    """`send --wait` of ``amount`` from account 1 (balance 100) to 2, a worker consuming."""
    open_accounts(database_url, 2, "100")
    with running_worker(worker_settings(env)):
        code, out, _ = run(
            capsys, "send", "--payer", "1", "--payee", "2", "--amount", amount, "--wait",
            "--timeout", "20",
        )  # fmt: skip
    return code, out


def test_send_wait_prints_the_committed_outcome(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], database_url: str
) -> None:
    """send --wait prints payer balance, transaction time and attempts, and exits 0."""
    code, out = send_and_wait(capsys, env, database_url, "10")
    assert code == 0
    transfer_id, *outcome = out.splitlines()
    uuid.UUID(transfer_id)
    assert outcome[0] == "committed"
    assert outcome[1] == "  payer balance   90.000000"
    assert re.fullmatch(r"  transaction ms  \d+\.\d{3}", outcome[2])
    assert outcome[3] == "  attempts        1"


def test_send_wait_prints_the_rejection_reason(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], database_url: str
) -> None:
    """A rejected transfer prints its reason and exits 1."""
    code, out = send_and_wait(capsys, env, database_url, "100.01")
    assert code == 1
    assert out.splitlines()[1:] == [
        "rejected",
        "  reason          insufficient_funds",
        "  attempts        1",
    ]


@pytest.mark.usefixtures("env")
def test_send_wait_without_a_consumer_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    """No result within --timeout: exit 3, the id still printed, stderr says timed out."""
    code, out, err = run(
        capsys, "send", "--payer", "1", "--payee", "2", "--amount", "1", "--wait",
        "--timeout", "0.3",
    )  # fmt: skip
    assert code == 3
    uuid.UUID(out.strip())
    assert "timed out" in err


# --- load ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_load_sends_n_valid_random_transfers(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """N messages, distinct uuid4 ids, payer != payee in 1..K, amounts 0.01-10.00."""
    code, out, err = run(capsys, "load", "--iters", "137", "--threads", "4", "--accounts", "5")
    assert code == 0
    assert "  sent            137 in" in out
    assert "137/137 msgs" in err  # the progress bar
    requests = [parse_body(m["Body"], "") for m in drain(local_sqs.client(), queues.queue_url)]
    assert len(requests) == 137
    assert len({r.transfer_id for r in requests}) == 137
    assert {r.transfer_id.version for r in requests} == {4}
    for r in requests:
        assert 1 <= r.payer_id <= 5
        assert 1 <= r.payee_id <= 5
        assert r.payer_id != r.payee_id
        assert Decimal("0.01") <= r.amount <= Decimal("10.00")
        assert r.amount.as_tuple().exponent == -2


@pytest.mark.usefixtures("env")
def test_load_to_a_fifo_queue_groups_by_payer_and_dedups_by_transfer_id(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a .fifo queue MessageGroupId is the payer and MessageDeduplicationId the id."""
    fifo = local_sqs.create_queues(f"t-{uuid.uuid4().hex[:12]}", fifo=True)
    monkeypatch.setenv("QUEUE_URL", fifo.queue_url)
    code, _, _ = run(capsys, "load", "--iters", "30", "--threads", "2", "--accounts", "4")
    assert code == 0
    messages = drain(local_sqs.client(), fifo.queue_url)
    assert len(messages) == 30
    for message in messages:
        request = parse_body(message["Body"], "")
        assert message["Attributes"]["MessageGroupId"] == str(request.payer_id)
        assert message["Attributes"]["MessageDeduplicationId"] == str(request.transfer_id)


def test_load_wait_json_matches_the_database(
    env: dict[str, str],
    local_sqs: LocalSqs,
    queues: Queues,
    database_url: str,
) -> None:
    """A real `python -m producer load --wait --json` prints one JSON object that agrees
    with transfer_results: counts, retries, and end-to-end >= transaction time."""
    open_accounts(database_url, 4, "100000")  # no transfer can run out of money
    with running_worker(worker_settings(env)):
        proc = subprocess.run(
            [sys.executable, "-m", "producer", "load", "--iters", "150", "--threads", "3",
             "--accounts", "4", "--wait", "--json", "--timeout", "60"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole of stdout is one object
    assert set(data) == LOAD_JSON_KEYS
    with psycopg.connect(database_url) as conn:
        count, committed, retries, max_retries = (
            conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'committed'),"
                " sum(attempts - 1), max(attempts - 1) FROM transfer_results"
            ).fetchone()
            or ()
        )
    assert data["requested"] == data["sent"] == count == 150
    assert (data["committed"], data["rejected"], data["failed"]) == (committed, 0, 0)
    assert data["committed"] + data["rejected"] == data["sent"]
    assert (data["retries"]["total"], data["retries"]["max"]) == (retries, max_retries)
    assert data["end_to_end_ms"]["count"] == data["transaction_ms"]["count"] == 150
    for figure in ("min", "avg", "p50", "p99", "max"):
        assert data["end_to_end_ms"][figure] >= data["transaction_ms"][figure]
    assert data["total_time_s"] > 0
    assert data["throughput_per_s"] == pytest.approx(150 / data["total_time_s"])
    assert "results" in proc.stderr  # the results progress line


@pytest.mark.usefixtures("env")
def test_load_wait_without_a_consumer_reports_them_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Sent transfers without a result by --timeout count as failed, and the exit is 1."""
    code, out, err = run(
        capsys, "load", "--iters", "20", "--accounts", "3", "--wait", "--timeout", "0.5"
    )
    assert code == 1
    lines = out.splitlines()
    stats = lines[lines.index("STATS") :]
    assert stats[1].split() == ["sent", "20"]
    assert stats[2].split() == ["committed", "0", "(0.00", "%)"]
    assert stats[4].split() == ["failed", "20", "(100.00", "%)", "no", "result"]
    assert "20 sent transfers have no result" in err


def test_refused_batch_entries_are_resent_then_reported_not_sent(
    local_sqs: LocalSqs, queues: Queues
) -> None:
    """Entries SQS fails are resent; still failing after the retries, or failed by the
    sender's fault (never resent), they are reported as not sent and never queued."""
    transfers = list(plan_transfers(25, 5, Random(1)))
    flaky, broken, malformed = (t.transfer_id.hex for t in transfers[:3])

    def refuse(entry_id: str, attempt: int) -> bool | None:
        if entry_id == malformed:
            return True
        if entry_id == broken or (entry_id == flaky and attempt == 1):
            return False
        return None

    client = RefusingClient(local_sqs.client(), refuse)
    report = send_transfers([TransferClient(cast(Any, client), queues.queue_url)], transfers)

    assert report.requested == 25
    assert report.not_sent == {
        uuid.UUID(broken): "InternalError",
        uuid.UUID(malformed): "InvalidParameterValue",
    }
    expected = {t.transfer_id for t in transfers} - set(report.not_sent)
    assert set(report.sent) == expected
    assert len(report.sent) == 23
    assert (client.attempts[flaky], client.attempts[broken], client.attempts[malformed]) == (
        2,
        1 + ENTRY_RETRIES,
        1,
    )
    queued = [
        parse_body(m["Body"], "").transfer_id for m in drain(local_sqs.client(), queues.queue_url)
    ]
    assert sorted(queued) == sorted(expected)


# --- the workload and the summary, pure ---------------------------------------------------


def test_plan_transfers_repeats_the_workload_for_a_seed_but_never_the_ids() -> None:
    """The same seed draws the same accounts and amounts; every id is new."""
    first = list(plan_transfers(50, 2, Random(7)))
    second = list(plan_transfers(50, 2, Random(7)))
    assert [(t.payer_id, t.payee_id, t.amount) for t in first] == [
        (t.payer_id, t.payee_id, t.amount) for t in second
    ]
    assert {(t.payer_id, t.payee_id) for t in first} == {(1, 2), (2, 1)}
    assert len({t.transfer_id for t in first + second}) == 100


def test_summarize_load_counts_failed_and_times_from_first_send_to_last_result() -> None:
    """Percentages are of sent transfers; total time runs from the first send to the
    last result; end-to-end is completed_at - enqueued_at of every result."""
    results = [
        result(Status.COMMITTED, attempts=1, ms=2.0, enqueued_s=1.0, completed_s=1.5),
        result(Status.COMMITTED, attempts=3, ms=4.0, enqueued_s=1.0, completed_s=2.0),
        result(Status.REJECTED, reason=Reason.INSUFFICIENT_FUNDS, enqueued_s=2.0, completed_s=4.0),
    ]
    stats = summarize_load(results, sent=5, first_sent_at=T0)
    data = load_stats_as_dict(stats)
    assert set(data) == LOAD_JSON_KEYS - {
        "requested", "not_sent", "not_sent_by_code", "send_s", "send_rate_per_s",
    }  # fmt: skip
    assert (data["committed"], data["rejected"], data["failed"]) == (2, 1, 2)
    assert (data["committed_pct"], data["failed_pct"]) == (40.0, 40.0)
    assert data["rejected_by_reason"] == {"insufficient_funds": 1}
    assert data["retries"]["total"] == 2
    assert data["end_to_end_ms"]["min"] == 500.0
    assert data["end_to_end_ms"]["max"] == 2000.0
    assert data["transaction_ms"]["max"] == 4.0
    assert data["total_time_s"] == 4.0
    assert data["throughput_per_s"] == 0.75
    lines = format_load_stats(stats).splitlines()
    assert lines[4].split() == ["failed", "2", "(40.00", "%)", "no", "result"]
    assert lines[8].split()[:3] == ["end-to-end", "ms", "min=500.000"]
    assert lines[9].split()[:3] == ["total", "time", "4.000"]


def test_backlog_gate_pauses_sending_until_the_queue_drains(
    env: dict[str, str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """--max-backlog holds the senders while the queue is full and lets them go on
    once it is consumed."""
    client = local_sqs.client()
    gate = BacklogGate(client, queues.queue_url, limit=20)
    transfers = plan_transfers(100, 5, Random(1))
    done = threading.Event()
    reports: list[SendReport] = []

    def send() -> None:
        sender = TransferClient(local_sqs.client(), queues.queue_url)
        reports.append(send_transfers([sender], transfers, gate=gate))
        done.set()

    threading.Thread(target=send, daemon=True).start()
    time.sleep(1.5)
    assert not done.is_set(), "the gate should hold the sender at the backlog limit"
    # Counted before draining: while the drain runs, the gate rightly lets more through.
    held = queue_depth(client, queues.queue_url).visible
    assert 20 <= held <= 30  # one batch may pass the gate as the count catches up
    while not done.wait(0.2):
        drain(client, queues.queue_url)
    assert len(reports[0].sent) == 100
