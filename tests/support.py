"""What several test modules need, written once (fixtures live in conftest.py).

Sending bodies, waiting for a condition, counting results and reading queues go
through the product's own SQS helpers (:mod:`worker.transport.sqs`), so the tests
exercise the same batching rules the code uses.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

from sandbox.sqs import LocalSqs
from worker.contract import encode_body
from worker.db import connect
from worker.engine import RetryPolicy
from worker.settings import Settings
from worker.transport.consumer import Consumer
from worker.transport.service import Service, build
from worker.transport.sqs import queue_depth, receive_all, send_messages


def policy(**overrides: Any) -> RetryPolicy:
    """The default retry policy (the Settings defaults) with ``overrides``."""
    return replace(RetryPolicy.from_settings(Settings()), **overrides)


@contextmanager
def running_worker(
    settings: Settings, *, visibility_timeout_s: int = 30
) -> Iterator[tuple[Consumer, Service]]:
    """The real consumer, in a background thread of this process; drained on exit."""
    service = build(settings, service_name="test-worker")
    consumer = service.consumer(visibility_timeout_s=visibility_timeout_s, drain_timeout_s=10)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer, service
    finally:
        consumer.stop()
        thread.join(30)
        service.close()


def body(payer: int, payee: int, amount: str, transfer_id: uuid.UUID | None = None) -> str:
    """A well-formed transfer body (a fresh transfer id unless given)."""
    return encode_body(payer, payee, Decimal(amount), transfer_id or uuid.uuid4())


def send(local_sqs: LocalSqs, url: str, bodies: Sequence[str]) -> list[str]:
    """Send ``bodies`` in batches of 10; their SQS message ids, in order. Fails the
    test if SQS refuses one."""
    sent = send_messages(
        local_sqs.client(),
        url,
        [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
    )
    assert not sent.failed, sent.failed
    return [sent.message_ids[str(i)] for i in range(len(bodies))]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "it") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def result_count(settings: Settings) -> int:
    """Rows in transfer_results."""
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM transfer_results").fetchone()
    return int(row[0]) if row else 0


def queue_total(local_sqs: LocalSqs, url: str) -> int:
    """Messages the queue still holds, visible or in flight."""
    return queue_depth(local_sqs.client(), url).total


def drain(local_sqs: LocalSqs, url: str) -> list[dict[str, Any]]:
    """Every message now visible on the queue (left hidden for its visibility timeout)."""
    return [dict(m) for m in receive_all(local_sqs.client(), url)]


def balances(settings: Settings) -> dict[int, Decimal]:
    """Every account's balance, by id."""
    with connect(settings) as conn:
        return dict(conn.execute("SELECT id, balance FROM accounts").fetchall())  # type: ignore[arg-type]


def poison_payer(settings: Settings, payer: int) -> None:
    """Make the database raise an unexpected error (XX000, from a trigger) for every
    result row of transfers from ``payer``: a poison message, the same on every try."""
    with connect(settings, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.payer_id = {int(payer)} THEN"
            " RAISE EXCEPTION 'poison' USING ERRCODE = 'XX000'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON transfer_results"
            " FOR EACH ROW EXECUTE FUNCTION poison()"
        )
