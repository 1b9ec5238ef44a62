"""The SQS consumer against moto's HTTP server and a real PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.dsql_faults import DsqlFaults
from sandbox.sqs import LocalSqs, Queues
from tests.support import body, drain, queue_total, result_count, running_worker, send, wait_for
from worker.contract import TransferRequest
from worker.db import connect
from worker.dispatch import Job, Message, Verdict
from worker.errors import RetryableTransferError
from worker.outcomes import TransferResult
from worker.settings import Settings


@pytest.fixture
def funded(sqs_settings: Settings) -> Settings:
    """Accounts 1..20 with 100 each, plus queue settings."""
    reset_accounts(sqs_settings, 20, Decimal(100))
    return sqs_settings


@pytest.fixture(params=[None, 0.3], ids=["postgres", "commit-conflicts"])
def commit_conflicts(request: pytest.FixtureRequest, funded: Settings) -> DsqlFaults | None:
    """Plain PostgreSQL, or DSQL's conflicts: 30 % of the COMMITs fail with OC000."""
    if request.param is None:
        return None
    faults: DsqlFaults = request.getfixturevalue("dsql_faults")
    faults.conflict_at_commit(request.param)
    return faults


def assert_retries_cover(settings: Settings, faults: DsqlFaults | None) -> None:
    """With injected conflicts: some transfers took more than one attempt, and the
    attempts recorded account for every conflict injected."""
    if faults is None:
        return
    injected = faults.raised().commit_conflicts
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE attempts > 1), sum(attempts - 1) FROM transfer_results"
        ).fetchone()
    assert row is not None
    retried, retries = row
    assert retried > 0
    assert retries >= injected > 0


def test_batch_of_transfers_is_applied_and_deleted(
    funded: Settings, local_sqs: LocalSqs, queues: Queues, commit_conflicts: DsqlFaults | None
) -> None:
    """Every received transfer gets one result and its message is deleted (with DSQL's
    commit-time conflicts too: retried, never half-applied)."""
    bodies = [body(1 + i % 19, 2 + i % 19, "1.25") for i in range(60)]
    with running_worker(funded):
        send(local_sqs, queues.queue_url, bodies)
        wait_for(lambda: result_count(funded) == 60)
        wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)
    with connect(funded) as conn:
        report = run_audit(conn)
    assert report.violations == []
    assert report.committed_transfers == 60
    assert result_count(funded) == 60
    assert_retries_cover(funded, commit_conflicts)


def test_enqueued_at_is_the_sqs_sent_timestamp(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """The stored enqueued_at comes from SQS's SentTimestamp, before completed_at."""
    before = time.time()
    tid = uuid.uuid4()
    with running_worker(funded):
        send(local_sqs, queues.queue_url, [body(1, 2, "1", tid)])
        wait_for(lambda: result_count(funded) == 1)
    with connect(funded) as conn:
        row = conn.execute(
            "SELECT enqueued_at, completed_at FROM transfer_results WHERE transfer_id = %s", (tid,)
        ).fetchone()
    assert row is not None
    enqueued, completed = row
    assert before - 1 <= enqueued.timestamp() <= completed.timestamp()


def test_malformed_messages_go_to_the_dlq_with_their_error(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """Unparseable bodies are moved to the DLQ with an error attribute, then deleted."""
    bad = ["not json", '{"payer_id": "1", "payee_id": 2, "amount": "1"}', '{"payer_id": 1}']
    with running_worker(funded):
        send(local_sqs, queues.queue_url, [*bad, body(1, 2, "1")])
        wait_for(lambda: result_count(funded) == 1)
        wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)
    dead = drain(local_sqs, queues.dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(bad)
    errors = {m["Body"]: m["MessageAttributes"]["error"]["StringValue"] for m in dead}
    assert "not valid JSON" in errors["not json"]
    assert "payer_id" in errors['{"payer_id": "1", "payee_id": 2, "amount": "1"}']
    assert "payee_id" in errors['{"payer_id": 1}']
    assert all(m["MessageAttributes"]["source_message_id"]["StringValue"] for m in dead)


def test_duplicate_message_is_applied_once(
    funded: Settings, local_sqs: LocalSqs, queues: Queues, commit_conflicts: DsqlFaults | None
) -> None:
    """Two messages with one transfer_id move money once; both are acknowledged."""
    tid = uuid.uuid4()
    if commit_conflicts is not None:
        commit_conflicts.conflict_at_commit(next_commits=2)  # the first two commits fail
    with running_worker(funded):
        send(local_sqs, queues.queue_url, [body(3, 4, "10", tid), body(3, 4, "10", tid)])
        wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)
    assert_retries_cover(funded, commit_conflicts)
    with connect(funded) as conn:
        balances = dict(
            conn.execute("SELECT id, balance FROM accounts WHERE id IN (3, 4)").fetchall()
        )
    assert balances == {3: Decimal(90), 4: Decimal(110)}
    assert result_count(funded) == 1


def test_message_without_transfer_id_uses_the_message_id(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """A body without transfer_id is keyed by its SQS message id."""
    client = local_sqs.client()
    sent = client.send_message(
        QueueUrl=queues.queue_url,
        MessageBody=json.dumps({"payer_id": 5, "payee_id": 6, "amount": 2}),
    )
    with running_worker(funded):
        wait_for(lambda: result_count(funded) == 1)
    with connect(funded) as conn:
        row = conn.execute("SELECT transfer_id FROM transfer_results").fetchone()
    assert row is not None
    assert str(row[0]) == sent["MessageId"]


def test_message_abandoned_by_a_crashed_worker_is_redelivered(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """A message received but never deleted comes back after its visibility timeout."""
    client = local_sqs.client()
    tid = uuid.uuid4()
    send(local_sqs, queues.queue_url, [body(7, 8, "5", tid)])
    taken = client.receive_message(QueueUrl=queues.queue_url, VisibilityTimeout=2)["Messages"]
    assert len(taken) == 1  # the "crashed worker" holds it and never deletes it
    with running_worker(funded):
        time.sleep(1)
        assert result_count(funded) == 0, "invisible while the first receiver holds it"
        wait_for(lambda: result_count(funded) == 1, timeout=15)
        wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)


def test_transient_failure_leaves_message_for_redelivery(
    funded: Settings, local_sqs: LocalSqs, queues: Queues, server_url: str
) -> None:
    """When the transfer cannot run (row locked past the budget) the message comes back."""
    settings = funded.model_copy(update={"retry_budget_s": 0.5, "retry_visibility_s": 1})
    tid = uuid.uuid4()
    applied: list[str] = []
    with psycopg.connect(settings.database_url.get_secret_value()) as blocker:  # type: ignore[union-attr]
        blocker.execute("SET lock_timeout = 0")
        blocker.execute("SELECT 1 FROM accounts WHERE id = 9 FOR UPDATE")
        with running_worker(settings) as (_, service):
            original = service.engine.apply

            def counting(request: TransferRequest, **kwargs: Any) -> TransferResult:
                try:
                    result = original(request, **kwargs)
                except RetryableTransferError:
                    applied.append("retry")
                    raise
                applied.append("ack")
                return result

            service.engine.apply = counting  # type: ignore[method-assign]
            with service.pool.connection() as conn:
                conn.execute("SELECT 1")
            send(local_sqs, queues.queue_url, [body(9, 10, "1", tid)])
            wait_for(lambda: "retry" in applied)
            blocker.rollback()
            wait_for(lambda: result_count(settings) == 1, timeout=20)
            wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)
    assert applied[0] == "retry"
    assert applied[-1] == "ack"


def test_slow_transfer_keeps_its_message_invisible(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """The heartbeat extends visibility, so a transfer slower than the timeout runs once."""
    settings = funded.model_copy(update={"retry_budget_s": 30})
    seen: list[str] = []
    with psycopg.connect(settings.database_url.get_secret_value()) as blocker:  # type: ignore[union-attr]
        blocker.execute("SELECT 1 FROM accounts WHERE id = 11 FOR UPDATE")
        with running_worker(settings, visibility_timeout_s=2) as (consumer, _):
            original = consumer.dispatcher.admit

            def recording(message: Message) -> Job | Verdict:
                seen.append(message.message_id)
                return original(message)

            consumer.dispatcher.admit = recording  # type: ignore[method-assign]
            send(local_sqs, queues.queue_url, [body(11, 12, "1")])
            wait_for(lambda: len(seen) == 1)
            time.sleep(5)  # 2.5 visibility timeouts while the row lock blocks the transfer
            blocker.rollback()
            wait_for(lambda: result_count(settings) == 1)
            wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)
    assert len(seen) == 1, "the message was redelivered while still being processed"


def test_one_blocked_transfer_does_not_stall_the_others(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """Receiving continues while a transfer is stuck: no wait for the whole batch."""
    with psycopg.connect(funded.database_url.get_secret_value()) as blocker:  # type: ignore[union-attr]
        blocker.execute("SELECT 1 FROM accounts WHERE id = 13 FOR UPDATE")
        with running_worker(funded.model_copy(update={"retry_budget_s": 30})):
            send(local_sqs, queues.queue_url, [body(13, 14, "1")])
            time.sleep(0.5)
            send(
                local_sqs, queues.queue_url, [body(1 + i % 10, 2 + i % 10, "1") for i in range(30)]
            )
            wait_for(lambda: result_count(funded) == 30)
            blocker.rollback()
            wait_for(lambda: result_count(funded) == 31)


def test_transfers_on_one_account_never_run_concurrently(
    funded: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """Inside one process, two transfers sharing an account never overlap."""
    active: set[int] = set()
    overlaps: list[int] = []
    lock = threading.Lock()
    with running_worker(funded.model_copy(update={"worker_concurrency": 8})) as (_, service):
        original = service.engine.apply

        def exclusive(request: TransferRequest, **kwargs: Any) -> TransferResult:
            keys = {request.payer_id, request.payee_id}
            with lock:
                overlaps.extend(keys & active)
                active.update(keys)
            try:
                time.sleep(0.005)
                return original(request, **kwargs)
            finally:
                with lock:
                    active.difference_update(keys)

        service.engine.apply = exclusive  # type: ignore[method-assign]
        send(local_sqs, queues.queue_url, [body(1 + i % 4, 2 + i % 4, "0.5") for i in range(80)])
        wait_for(lambda: result_count(funded) == 80)
    assert overlaps == []


def test_fifo_queue_applies_each_group_in_order(
    settings: Settings, local_sqs: LocalSqs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a FIFO queue (group = payer) a payer's transfers apply in the order sent: the
    payer's balance after each transfer falls step by step."""
    for key, value in local_sqs.env().items():
        monkeypatch.setenv(key, value)
    fifo = local_sqs.create_queues(f"fifo-{uuid.uuid4().hex[:8]}", fifo=True)
    reset_accounts(settings, 6, Decimal(100))
    client = local_sqs.client()
    sent: dict[int, list[uuid.UUID]] = {1: [], 2: []}
    for i in range(20):
        payer = 1 + i % 2
        tid = uuid.uuid4()
        sent[payer].append(tid)
        client.send_message(
            QueueUrl=fifo.queue_url,
            MessageBody=body(payer, 3 + i % 4, "1", tid),
            MessageGroupId=str(payer),
            MessageDeduplicationId=str(tid),
        )
    fifo_settings = settings.model_copy(
        update={"queue_url": fifo.queue_url, "dlq_url": fifo.dlq_url, "receive_wait_s": 1}
    )
    with running_worker(fifo_settings):
        wait_for(lambda: result_count(fifo_settings) == 20)
    with connect(fifo_settings) as conn:
        balance = dict(
            conn.execute("SELECT transfer_id, payer_balance FROM transfer_results").fetchall()
        )
    for payer, ids in sent.items():
        assert [balance[t] for t in ids] == [Decimal(99 - k) for k in range(10)], payer
