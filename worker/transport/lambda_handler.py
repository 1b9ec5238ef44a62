"""The SQS-triggered Lambda (deployed as ``worker.lambda_handler.handler``).

Same contract, engine and results as the container worker; only the transport
differs. The Lambda service receives the batch and deletes what we do not report,
so the handler's whole job is to process the records and name the transient
failures in ``batchItemFailures`` (the event source mapping must enable
``ReportBatchItemFailures``):

- committed, rejected and duplicate records are successes;
- malformed records are sent to the DLQ with their error, then count as successes
  (if the DLQ send fails they are reported, so they come back);
- records whose transfer failed transiently are reported;
- records not started while enough time remained (``LAMBDA_RESERVE_MS``) are reported,
  never half done: a transfer is one database transaction; a started record's retry
  budget is cut to the remaining time (less a second to answer), so a contended
  transfer fails cleanly instead of timing the whole invocation out;
- on a FIFO queue, once a record fails every later record of its message group is
  reported without being applied, so the group keeps its order.

Reported records go back when their verdict says (:mod:`worker.dispatch`: transient
failures on the redelivery schedule, records not started at once): the handler sets
each one's visibility with
ChangeMessageVisibility before answering, so the queue's maxReceiveCount (computed
from the same schedule) covers REDELIVERY_HORIZON_S of outage (30 minutes by default)
before a record that only waited for the database could reach the DLQ. A Lambda
cannot pause its event source mapping the way the container worker holds back.

Once one record finds the database unreachable (its retry on a fresh connection
failed too) the rest of the batch fails fast, without touching the database: each
would otherwise wait out the pool timeout and the budget, burning the invocation's
time and DSQL's connection rate for an answer already known. Nothing was applied for
them, so failing them is free; they come back with the same delay. The next
invocation probes once before it starts.

The pool lives at module level and is reused by every invocation of a warm
execution environment; records of one batch run concurrently, but two records
touching the same account never at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from worker.db import LOCK_TIMEOUT_S
from worker.dispatch import Action, Dispatcher, Message, Verdict
from worker.settings import Settings
from worker.transport.service import Service, build
from worker.transport.sqs import DeadLetters, dead_letter, set_visibility

log = structlog.get_logger(__name__)

RESPONSE_MARGIN_MS = 1000 + int(LOCK_TIMEOUT_S * 1000)
"""Time kept back from a record's retry budget: a second to return the batch response,
plus the longest a started attempt can overrun the budget (a PostgreSQL lock wait;
on DSQL attempts never wait)."""

_service: Service | None = None
_service_lock = threading.Lock()


def _get_service() -> Service:
    """Build the pool and engine once per execution environment."""
    global _service  # noqa: PLW0603 - module-level reuse across invocations is the point
    with _service_lock:
        if _service is None:
            from worker.logs import configure_logging

            settings = Settings()
            configure_logging(settings)
            _service = build(settings, service_name="transfer-lambda", queue_required=False)
        return _service


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Process a Lambda SQS event; report only the records that must come back."""
    service = _get_service()
    messages = [Message.from_lambda(record) for record in event.get("Records", [])]
    if service.availability.down:
        service.availability.probe_once()
    verdicts = process_batch(
        messages,
        service.dispatcher(),
        service.dead_letters,
        concurrency=service.settings.concurrency,
        time_left_ms=context.get_remaining_time_in_millis,
        reserve_ms=service.settings.lambda_reserve_ms,
    )
    failed = [(m, v) for m, v in zip(messages, verdicts, strict=True) if v is not None]
    if failed:
        _delay_redelivery(service, failed)
    service.metrics.flush()
    return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m, _ in failed]}


def _delay_redelivery(service: Service, failed: list[tuple[Message, Verdict]]) -> None:
    """Make each reported record visible again when its verdict says."""
    by_delay: dict[int, list[str]] = {}
    for message, verdict in failed:
        by_delay.setdefault(verdict.delay_s, []).append(message.receipt_handle)
    try:
        url = service.queue_url or _queue_url(service.client, failed[0][0])
        if url is None:
            return
        refused = [
            handle
            for delay, handles in by_delay.items()
            for handle in set_visibility(service.client, url, handles, delay)
        ]
    except Exception as exc:  # noqa: BLE001 - they still come back, after the queue's timeout
        log.warning("could not delay redelivery", records=len(failed), error=str(exc))
        return
    if refused:
        log.warning("visibility changes refused", records=len(refused))


def _queue_url(client: Any, message: Message) -> str | None:
    """The URL of the queue a record came from (when QUEUE_URL is not set)."""
    if message.queue_name is None:
        return None
    account, name = message.queue_name
    url: str = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return url


def process_batch(
    messages: list[Message],
    dispatcher: Dispatcher,
    dead_letters: DeadLetters | None,
    *,
    concurrency: int,
    time_left_ms: Callable[[], int],
    reserve_ms: int,
) -> list[Verdict | None]:
    """Apply a batch; for each message in order, the verdict that reports it as failed
    (RETRY, or a DEAD_LETTER that could not be sent), or None when it is done."""
    verdicts: dict[str, Verdict] = {}
    lock = threading.Lock()

    def decide(message: Message, verdict: Verdict) -> None:
        if verdict.action is Action.DEAD_LETTER and dead_letter(
            dead_letters, message, verdict.error or "malformed"
        ):
            return
        if verdict.action is not Action.ACK:
            with lock:
                verdicts[message.message_id] = verdict

    for message in messages:
        admitted = dispatcher.admit(message)
        if isinstance(admitted, Verdict):
            decide(message, admitted)

    def work() -> None:
        # Until the batch is done: a job blocked on an account now may be runnable
        # once the job holding that account finishes.
        while dispatcher.size:
            slot = dispatcher.take(timeout=0.05)
            if slot is None:
                continue
            left_ms = time_left_ms()
            if left_ms < reserve_ms:
                decide(slot.job.message, dispatcher.hand_back(slot))
                continue
            # Retries must end while the function can still answer.
            budget_s = max(left_ms - RESPONSE_MARGIN_MS, 0) / 1000
            decide(slot.job.message, dispatcher.run(slot, budget_s=budget_s))

    workers = max(1, min(concurrency, len(messages)))
    with ThreadPoolExecutor(workers, thread_name_prefix="record") as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    return [verdicts.get(m.message_id) for m in messages]
