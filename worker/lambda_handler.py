"""The SQS-triggered Lambda: ``worker.lambda_handler.handler``.

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

Reported records go back on the redelivery schedule (:mod:`worker.redelivery`): the
handler sets each one's visibility to ``delay_s(receive count)`` with
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
from worker.processing import Disposition, Handled, Message, Processor, exclusive_keys
from worker.redelivery import RedeliverySchedule
from worker.scheduler import AccountScheduler
from worker.service import Service, build
from worker.settings import Settings
from worker.sqs import DeadLetters, change_visibility

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
    failed = process_batch(
        messages,
        service.processor,
        service.dead_letters,
        concurrency=service.settings.concurrency,
        time_left_ms=context.get_remaining_time_in_millis,
        reserve_ms=service.settings.lambda_reserve_ms,
    )
    if failed:
        _delay_redelivery(service, [m for m in messages if m.message_id in set(failed)])
    service.metrics.flush()
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def _delay_redelivery(service: Service, messages: list[Message]) -> None:
    """Set each reported record's visibility to its place on the redelivery schedule."""
    schedule = RedeliverySchedule.from_settings(service.settings)
    changes = [(m.receipt_handle, schedule.delay_s(m.receive_count)) for m in messages]
    try:
        url = service.queue_url or messages[0].queue_url(service.client)
        if url is not None:
            change_visibility(service.client, url, changes)
    except Exception as exc:  # noqa: BLE001 - they still come back, after the queue's timeout
        log.warning("could not delay redelivery", records=len(changes), error=str(exc))


def process_batch(
    messages: list[Message],
    processor: Processor,
    dead_letters: DeadLetters | None,
    *,
    concurrency: int,
    time_left_ms: Callable[[], int],
    reserve_ms: int,
) -> list[str]:
    """Apply a batch; returns the message ids to report as failures, in batch order."""
    failed: set[str] = set()
    failed_groups: set[str] = set()
    lock = threading.Lock()
    scheduler: AccountScheduler[tuple[Message, Any]] = AccountScheduler()

    for message in messages:
        parsed = processor.parse(message)
        if isinstance(parsed, Handled):
            if not _dead_letter(message, parsed, dead_letters):
                failed.add(message.message_id)
            continue
        scheduler.put((message, parsed), exclusive_keys(message, parsed))

    def fail(message: Message) -> None:
        with lock:
            failed.add(message.message_id)
            if message.group_id is not None:
                failed_groups.add(message.group_id)

    def work() -> None:
        # Until the batch is done: a job blocked on an account now may be runnable
        # once the job holding that account finishes.
        while scheduler.size:
            slot = scheduler.take(timeout=0.05)
            if slot is None:
                continue
            message, request = slot.job
            try:
                with lock:
                    skip = message.group_id in failed_groups
                left_ms = time_left_ms()
                if skip or left_ms < reserve_ms:
                    fail(message)
                    continue
                # Retries must end while the function can still answer.
                budget_s = max(left_ms - RESPONSE_MARGIN_MS, 0) / 1000
                handled = processor.apply(message, request, budget_s=budget_s)
                if handled.disposition is not Disposition.ACK:
                    fail(message)
            finally:
                scheduler.done(slot)

    workers = max(1, min(concurrency, len(messages)))
    with ThreadPoolExecutor(workers, thread_name_prefix="record") as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    return [m.message_id for m in messages if m.message_id in failed]


def _dead_letter(message: Message, handled: Handled, dead_letters: DeadLetters | None) -> bool:
    """True when the malformed record is safely in the DLQ (so it may be deleted)."""
    if dead_letters is None:
        log.error("malformed record reported as failed: no DLQ_URL", message_id=message.message_id)
        return False
    try:
        dead_letters.send(message, handled.error or "malformed")
    except Exception as exc:  # noqa: BLE001 - report it; the record comes back
        log.error("dead-lettering failed", message_id=message.message_id, error=str(exc))
        return False
    return True
