"""Redrive by copy: receive, send to the queue, delete from the DLQ what it accepted.

For endpoints without a move task, and for ``--max`` (a task always moves
everything): batch by batch, receive 10, send their copies (:func:`.redrive_entry`)
to the queue, and delete from the DLQ only the entries SQS accepted, never before.
Refused ones are made visible again at the end of the run (not during it, so one run
does not loop on them). A copy can happen twice (a delete that fails after its send
succeeded): harmless, a transfer id is applied once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from producer.dlq.messages import receive, redrive_entry, release
from producer.dlq.report import Method, RedriveReport
from producer.sqs import SQS_ERRORS, send_entries
from worker.transport.sqs import BATCH, delete_messages, is_fifo

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def move_by_copy(
    client: SQSClient,
    dlq_url: str,
    queue_url: str,
    *,
    limit: int | None = None,
    rate: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveReport:
    """Receive, send to the queue, delete what SQS accepted; up to ``limit`` messages,
    at most ``rate`` per second.

    Every message is taken once per run: one received again (its hold ran out) is
    released untouched, and a batch of nothing new ends the run. SQS errors do not
    raise: the run stops, and the report says what was done and why it stopped.
    """
    fifo = is_fifo(queue_url)
    started = time.monotonic()
    taken = sent_total = not_deleted = 0
    not_moved: Counter[str] = Counter()
    seen: set[str] = set()
    hold: list[str] = []  # receipt handles to release at the end
    error: str | None = None
    try:
        while limit is None or taken < limit:
            want = BATCH if limit is None else min(BATCH, limit - taken)
            batch = receive(client, dlq_url, want)
            fresh = [m for m in batch if m["MessageId"] not in seen]
            hold += [m["ReceiptHandle"] for m in batch if m["MessageId"] in seen]
            if not fresh:
                break
            seen.update(m["MessageId"] for m in fresh)
            taken += len(fresh)
            entries = [redrive_entry(str(i), m, fifo=fifo) for i, m in enumerate(fresh)]
            try:
                outcome = send_entries(client, queue_url, entries)
            except SQS_ERRORS as exc:
                # Possibly sent after all (a timeout): a later copy is then a duplicate.
                not_moved[_code(exc)] += len(fresh)
                hold += [m["ReceiptHandle"] for m in fresh]
                raise
            for entry_id, code in outcome.not_sent.items():
                not_moved[code] += 1
                hold.append(fresh[int(entry_id)]["ReceiptHandle"])
            sent = [fresh[int(entry_id)]["ReceiptHandle"] for entry_id in outcome.sent]
            sent_total += len(sent)
            # Only now, and only what the queue accepted, leaves the DLQ.
            try:
                not_deleted += len(delete_messages(client, dlq_url, sent))
            except SQS_ERRORS:
                not_deleted += len(sent)
                raise
            if rate is not None:
                sleep(max(taken / rate - (time.monotonic() - started), 0))
    except SQS_ERRORS as exc:
        error = str(exc)
    finally:
        release(client, dlq_url, hold)
    return RedriveReport(
        method=Method.COPY,
        moved=sent_total - not_deleted,
        not_moved=dict(not_moved),
        not_deleted=not_deleted,
        error=error,
    )


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
