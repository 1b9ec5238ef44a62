"""The Lambda handler on Lambda-shaped SQS events: partial batch responses."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from producer.accounts import reset_accounts
from sandbox.sqs import LocalSqs, Queues
from tests.support import drain
from worker.contract import encode_body
from worker.db import connect
from worker.settings import Settings
from worker.transport import lambda_handler


class FakeContext:
    """The part of the Lambda context object the handler uses."""

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self.deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def record(body: str, message_id: str | None = None, group: str | None = None) -> dict[str, Any]:
    """One record as Lambda's SQS event source mapping delivers it."""
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": str(int(time.time() * 1000)),
        "SenderId": "AIDAEXAMPLE",
        "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
    }
    if group is not None:
        attributes["MessageGroupId"] = group
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:transfers",
        "awsRegion": "us-east-1",
    }


def transfer(payer: int, payee: int, amount: str, tid: uuid.UUID | None = None) -> str:
    return encode_body(payer, payee, Decimal(amount), tid or uuid.uuid4())


@pytest.fixture
def lambda_env(
    sqs_settings: Settings, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Environment as the function's configuration would set it; a fresh module pool."""
    reset_accounts(sqs_settings, 10, Decimal(100))
    assert sqs_settings.database_url is not None
    monkeypatch.setenv("DATABASE_URL", sqs_settings.database_url.get_secret_value())
    monkeypatch.setenv("DLQ_URL", queues.dlq_url)
    monkeypatch.setenv("RETRY_BUDGET_S", "1")
    monkeypatch.setenv("LOG_FORMAT", "console")
    lambda_handler._service = None
    yield sqs_settings
    if lambda_handler._service is not None:
        lambda_handler._service.close()
        lambda_handler._service = None


def dlq_bodies(local_sqs: LocalSqs, url: str) -> list[tuple[str, str]]:
    messages = drain(local_sqs, url)
    return [(m["Body"], m["MessageAttributes"]["error"]["StringValue"]) for m in messages]


def test_mixed_batch_reports_only_transient_failures(
    lambda_env: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """Good, rejected, malformed, duplicate and conflicting records succeed; a blocked
    transfer is the only batchItemFailure."""
    applied = uuid.uuid4()
    lambda_handler.handler({"Records": [record(transfer(1, 2, "5", applied))]}, FakeContext())
    good, rejected, malformed = (
        record(transfer(3, 4, "1")),
        record(transfer(5, 6, "500")),
        record("{oops"),
    )
    duplicate = record(transfer(1, 2, "5", applied))
    conflicting = record(transfer(1, 2, "6", applied))
    blocked = record(transfer(9, 10, "1"))
    assert lambda_env.database_url is not None
    with psycopg.connect(lambda_env.database_url.get_secret_value()) as locker:
        locker.execute("SELECT 1 FROM accounts WHERE id = 9 FOR UPDATE")
        response = lambda_handler.handler(
            {"Records": [good, rejected, malformed, duplicate, conflicting, blocked]}, FakeContext()
        )
    assert response == {"batchItemFailures": [{"itemIdentifier": blocked["messageId"]}]}
    with connect(lambda_env) as conn:
        rows = dict(
            conn.execute(
                "SELECT payer_id, coalesce(reason, status) FROM transfer_results"
            ).fetchall()
        )
        balances = dict(
            conn.execute("SELECT id, balance FROM accounts WHERE id IN (1, 2, 3, 9)").fetchall()
        )
    assert rows == {1: "committed", 3: "committed", 5: "insufficient_funds"}
    assert balances == {1: Decimal(95), 2: Decimal(105), 3: Decimal(99), 9: Decimal(100)}
    dead = dlq_bodies(local_sqs, queues.dlq_url)
    assert [body for body, _ in dead] == ["{oops"]
    assert "not valid JSON" in dead[0][1]


def test_records_not_started_in_time_are_reported_and_not_applied(lambda_env: Settings) -> None:
    """With less time left than the reserve, records are failed untouched."""
    records = [record(transfer(1 + i, 2 + i, "1")) for i in range(3)]
    response = lambda_handler.handler({"Records": records}, FakeContext(remaining_ms=1000))
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        r["messageId"] for r in records
    )
    with connect(lambda_env) as conn:
        assert conn.execute("SELECT count(*) FROM transfer_results").fetchone() == (0,)


def test_fifo_group_stops_at_its_first_failure(lambda_env: Settings) -> None:
    """After a failed record, later records of its group are reported, not applied;
    other groups carry on."""
    assert lambda_env.database_url is not None
    first = record(transfer(7, 8, "1"), group="g1")
    later = record(transfer(3, 4, "1"), group="g1")
    other = record(transfer(5, 6, "1"), group="g2")
    with psycopg.connect(lambda_env.database_url.get_secret_value()) as locker:
        locker.execute("SELECT 1 FROM accounts WHERE id = 7 FOR UPDATE")
        response = lambda_handler.handler({"Records": [first, later, other]}, FakeContext())
    assert response == {
        "batchItemFailures": [
            {"itemIdentifier": first["messageId"]},
            {"itemIdentifier": later["messageId"]},
        ]
    }
    with connect(lambda_env) as conn:
        assert conn.execute("SELECT payer_id FROM transfer_results").fetchall() == [(5,)]


def test_pool_is_reused_across_invocations(lambda_env: Settings) -> None:
    """A warm environment keeps its pool and engine between invocations."""
    lambda_handler.handler({"Records": [record(transfer(1, 2, "1"))]}, FakeContext())
    service = lambda_handler._service
    lambda_handler.handler({"Records": [record(transfer(2, 3, "1"))]}, FakeContext())
    assert lambda_handler._service is service
    assert service is not None
    assert service.pool.get_stats()["connections_num"] >= 1


def test_malformed_record_without_dlq_is_reported(
    lambda_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a DLQ a malformed record is reported, so the queue's redrive handles it."""
    monkeypatch.delenv("DLQ_URL")
    if lambda_handler._service is not None:
        lambda_handler._service.close()
    lambda_handler._service = None
    bad = record("[]")
    response = lambda_handler.handler({"Records": [bad]}, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}


def test_started_record_gives_up_before_the_function_times_out(
    lambda_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contended record's retries stop when the invocation's time runs low, even with
    a longer RETRY_BUDGET_S, and the record is reported."""
    monkeypatch.setenv("RETRY_BUDGET_S", "30")
    monkeypatch.setenv("LAMBDA_RESERVE_MS", "500")
    lambda_handler._service = None
    stuck = record(transfer(7, 8, "1"))
    assert lambda_env.database_url is not None
    with psycopg.connect(lambda_env.database_url.get_secret_value()) as locker:
        locker.execute("SELECT 1 FROM accounts WHERE id = 7 FOR UPDATE")
        started = time.monotonic()
        response = lambda_handler.handler({"Records": [stuck]}, FakeContext(remaining_ms=4000))
        elapsed = time.monotonic() - started
    assert response == {"batchItemFailures": [{"itemIdentifier": stuck["messageId"]}]}
    assert elapsed < 4.0, "the record must fail while the function can still answer"


def test_a_cold_start_imports_no_aws_sdk_until_sqs_is_needed(lambda_env: Settings) -> None:
    """Importing the handler and building its service (pool, engine) loads no boto3:
    a tenth of a second of every cold start goes to what most invocations never use.
    The first SQS call (a dead letter, a delayed retry) brings it in."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from worker.transport import lambda_handler\n"
        "service = lambda_handler._get_service()\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
        "service.client.meta\n"
        "print('boto3' in sys.modules)\n"
        "service.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "False", "True"]
