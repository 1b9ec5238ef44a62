"""Outages without casualties: a database or SQS outage dead-letters nothing.

Real PostgreSQL (stopped and started), moto's SQS over HTTP (its port closed and
reopened), real worker processes for the container path, and the real handler behind
an event-source-mapping stand-in for the Lambda path. Every schedule is shrunk so the
outages last seconds instead of minutes; the ratios between outage, retry budget,
backoff and horizon are those of the product's defaults or harsher.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.lambda_esm import EventSourceMapping
from sandbox.postgres import EmbeddedPostgres
from sandbox.processes import WorkerFleet, child_environment
from sandbox.sqs import LocalSqs, Queues
from tests.support import body, poison_payer, queue_total, running_worker, send, wait_for
from worker.contract import encode_body
from worker.db import connect
from worker.ops.migrate import migrate
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings
from worker.transport import lambda_handler

pytestmark = pytest.mark.slow

BUDGET_S = 2
"""RETRY_BUDGET_S in these tests (15 s in production)."""
SCHEDULE = RedeliverySchedule(first_delay_s=1, growth=2.0, cap_s=4, horizon_s=15)
"""1, 2, 4, 4, 4 s: maxReceiveCount 5, the redrive the issue saw dead-letter good
transfers. The database outage below lasts 5 x (budget + largest delay) = 30 s, twice
this horizon: only holding back keeps the receive counts down."""
OUTAGE_S = 5 * (BUDGET_S + SCHEDULE.cap_s)


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so stopping it harms no other test."""
    with EmbeddedPostgres() as server:
        settings = Settings(database_url=server.url)
        with connect(settings) as conn:
            migrate(conn, settings.backend)
        reset_accounts(settings, 50, Decimal(1000))
        yield server


def outage_env(pg: EmbeddedPostgres, sqs: LocalSqs, queues: Queues) -> dict[str, str]:
    return child_environment(
        pg.url,
        sqs,
        queues,
        **SCHEDULE.as_settings(),
        receive_wait_s=1,
        retry_budget_s=BUDGET_S,
        pool_timeout_s=1,
        connect_timeout_s=1,
        pool_min_size=1,
        pool_max_size=4,
        db_probe_interval_s=1,
        drain_timeout_s=5,
        metrics_interval_s=1,
        log_level="INFO",
    )


def send_transfers(sqs: LocalSqs, url: str, count: int, rng_seed: int) -> list[uuid.UUID]:
    """``count`` transfers among 50 funded accounts; their transfer ids."""
    rng = random.Random(rng_seed)
    ids = [uuid.uuid4() for _ in range(count)]
    bodies = []
    for tid in ids:
        payer, payee = rng.sample(range(1, 51), 2)
        bodies.append(body(payer, payee, str(Decimal(rng.randint(1, 500)) / 100), tid))
    send(sqs, url, bodies)
    return ids


def results(url: str) -> dict[uuid.UUID, int]:
    """transfer_id -> number of result rows (must be 1 each)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT transfer_id, count(*) FROM transfer_results GROUP BY 1")
        return dict(rows.fetchall())


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def assert_ledger_whole(url: str, sent: list[uuid.UUID]) -> None:
    """One result per sent transfer, nothing else, money conserved."""
    found = results(url)
    assert set(found) == set(sent), f"{len(set(sent) - set(found))} transfers have no result"
    assert set(found.values()) == {1}
    with psycopg.connect(url) as conn:
        assert run_audit(conn).violations == []


def test_workers_hold_back_through_a_database_outage_and_dead_letter_nothing(
    pg: EmbeddedPostgres, local_sqs: LocalSqs, tmp_path: Path
) -> None:
    """PostgreSQL stopped for 5 x (budget + largest delay), twice the redelivery horizon,
    under load from two worker processes: every transfer sent before, during and after
    ends with exactly one result, the DLQ stays empty, money is conserved, the workers
    never exit, and no message is received more than a few times."""
    queues = local_sqs.create_queues(
        f"outage-{uuid.uuid4().hex[:8]}",
        visibility_timeout_s=10,
        max_receive_count=SCHEDULE.max_receive_count,
    )
    assert SCHEDULE.max_receive_count == 5
    cluster = WorkerFleet(outage_env(pg, local_sqs, queues), tmp_path)
    workers = cluster.start_healthy(2)
    sent = send_transfers(local_sqs, queues.queue_url, 100, 1)
    wait_for(lambda: len(results(pg.url)) >= 30, 60, "the first results")

    during: list[uuid.UUID] = []

    def send_during_outage() -> None:
        time.sleep(2)
        during.extend(send_transfers(local_sqs, queues.queue_url, 100, 2))

    sender = threading.Thread(target=send_during_outage)
    sender.start()
    pg.restart("fast", downtime_s=OUTAGE_S)
    sender.join()
    sent += during + send_transfers(local_sqs, queues.queue_url, 100, 3)

    wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0, 120, "the queue to drain")
    assert all(w.alive for w in workers), "a worker exited during the outage"
    cluster.stop_all()
    assert cluster.unexpected_deaths() == []
    assert_ledger_whole(pg.url, sent)
    dead = local_sqs.client().receive_message(QueueUrl=queues.dlq_url, MaxNumberOfMessages=10)
    assert dead.get("Messages", []) == []

    lines = [line for w in workers for line in log_lines(w.log)]
    events = [line.get("event") for line in lines]
    assert "database unreachable, holding back" in events
    assert "database back" in events
    receives = [
        line["receive_count"]
        for line in lines
        if line.get("event") == "transfer" and not line.get("duplicate")
    ]
    assert len(receives) == len(sent)
    print(f"OUTAGE {OUTAGE_S}s: {len(sent)} transfers, receives per transfer: "
          f"max {max(receives)}, once {sum(r == 1 for r in receives)}")  # fmt: skip
    assert max(receives) < SCHEDULE.max_receive_count
    assert sum(r == 1 for r in receives) >= len(sent) // 2
    holding = [line for line in lines if line.get("_aws") and line.get("HoldingBack") == 1]
    assert holding, "HoldingBack was never reported in the metrics"


def test_a_poison_message_still_reaches_the_dlq_through_the_redrive_policy(
    sqs_settings: Settings, local_sqs: LocalSqs
) -> None:
    """A transfer that makes the database raise an unexpected error on every attempt is
    not a connection fault: the worker does not hold back, the message follows the
    redelivery schedule, and the queue's redrive moves it to the DLQ; its neighbours
    commit."""
    schedule = RedeliverySchedule(first_delay_s=1, growth=1.0, cap_s=1, horizon_s=3)
    queues = local_sqs.create_queues(
        f"poison-{uuid.uuid4().hex[:8]}", max_receive_count=schedule.max_receive_count
    )
    settings = sqs_settings.model_copy(
        update={
            "queue_url": queues.queue_url,
            "dlq_url": queues.dlq_url,
            "retry_visibility_s": 1,
            "retry_visibility_growth": 1.0,
            "retry_visibility_max_s": 1,
            "redelivery_horizon_s": 3,
        }
    )
    reset_accounts(settings, 10, Decimal(100))
    poison_payer(settings, 7)
    poison = encode_body(7, 8, Decimal(1), uuid.uuid4())
    good = [encode_body(1, 2, Decimal(1), uuid.uuid4()) for _ in range(5)]
    client = local_sqs.client()
    client.send_message_batch(
        QueueUrl=queues.queue_url,
        Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate([poison, *good])],
    )
    with running_worker(settings, visibility_timeout_s=5) as (consumer, service):

        def dead_lettered() -> list[str]:
            got = client.receive_message(
                QueueUrl=queues.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
            ).get("Messages", [])
            return [m["Body"] for m in got]

        wait_for(lambda: dead_lettered() == [poison], 60, "the poison in the DLQ")
        assert not service.availability.down
        assert not consumer.holding_back
    with connect(settings) as conn:
        committed = conn.execute(
            "SELECT count(*) FROM transfer_results WHERE status = 'committed'"
        ).fetchone()
    assert committed == (5,)


@pytest.fixture
def lambda_env(
    pg: EmbeddedPostgres, local_sqs: LocalSqs, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Queues]:
    """The handler configured like the deployed function, against this test's database."""
    schedule = RedeliverySchedule(first_delay_s=1, growth=2.0, cap_s=4, horizon_s=25)
    queues = local_sqs.create_queues(
        f"lambda-{uuid.uuid4().hex[:8]}",
        visibility_timeout_s=30,
        max_receive_count=schedule.max_receive_count,
    )
    env = child_environment(
        pg.url,
        local_sqs,
        queues,
        **schedule.as_settings(),
        retry_budget_s=BUDGET_S,
        pool_timeout_s=1,
        connect_timeout_s=1,
        log_format="console",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)
    lambda_handler._service = None
    yield queues
    if lambda_handler._service is not None:
        lambda_handler._service.close()
        lambda_handler._service = None


def test_the_lambda_path_dead_letters_nothing_within_the_horizon(
    pg: EmbeddedPostgres, local_sqs: LocalSqs, lambda_env: Queues
) -> None:
    """Records that fail while the database is down go back on the redelivery schedule
    (the handler sets their visibility), the batch fails fast after the first finds the
    database unreachable, and an outage shorter than the horizon dead-letters nothing:
    once the database is back every transfer has exactly one result."""
    queues = lambda_env
    client = local_sqs.client()
    with EventSourceMapping(client, queues.queue_url, lambda_handler.handler) as mapping:
        sent = send_transfers(local_sqs, queues.queue_url, 40, 4)
        wait_for(lambda: len(results(pg.url)) == 40, 60, "the first batch")
        before = mapping.stats.invocations
        pg.stop("fast")
        sent += send_transfers(local_sqs, queues.queue_url, 60, 5)
        time.sleep(15)
        during = mapping.stats.invocations - before
        reported = mapping.stats.reported
        pg.start()
        wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0, 90, "the queue to drain")
    print(f"LAMBDA: {during} invocations, {reported} records reported in the outage; "
          f"max receives {max(mapping.stats.receive_counts.values())}")  # fmt: skip
    assert reported >= 60
    # Fail fast and delays: a handful of invocations in 15 s, not one per second.
    assert during <= 40
    assert_ledger_whole(pg.url, sent)
    assert client.receive_message(QueueUrl=queues.dlq_url).get("Messages", []) == []
    assert (
        max(mapping.stats.receive_counts.values())
        < RedeliverySchedule(1, 2.0, 4, 25).max_receive_count
    )


def test_an_sqs_outage_under_load_loses_nothing_and_applies_nothing_twice(
    sqs_settings: Settings, local_sqs: LocalSqs
) -> None:
    """moto's server stopped for 60 s while a worker has transfers in hand: receives
    and acknowledgements fail and back off, nothing is dropped; after it is back every
    transfer has exactly one result and the ledger balances."""
    settings = sqs_settings.model_copy(update={"receive_wait_s": 1})
    reset_accounts(settings, 50, Decimal(1000))
    with running_worker(settings, visibility_timeout_s=10):
        sent = send_transfers(local_sqs, settings.queue_url or "", 300, 6)
        assert settings.database_url is not None
        url = settings.database_url.get_secret_value()
        wait_for(lambda: len(results(url)) >= 20, 30, "the first results")
        local_sqs.stop_serving()
        try:
            time.sleep(60)
        finally:
            local_sqs.resume_serving()
        wait_for(lambda: queue_total(local_sqs, settings.queue_url or "") == 0, 120, "the drain")
    assert_ledger_whole(url, sent)
