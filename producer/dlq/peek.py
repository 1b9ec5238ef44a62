"""``dlq peek``: up to N dead letters, shown and left where they were.

It receives up to N messages, then makes every one visible again at once
(ChangeMessageVisibility 0, in batches), so looking does not hide them. SQS receives
are sampled and approximate: a peek may not show every message even below N
(in-flight ones are invisible; FIFO groups are locked while one of their messages is
out), and every peek raises the peeked messages' ApproximateReceiveCount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from producer.dlq.messages import DeadLetter, receive, release
from worker.transport.sqs import BATCH

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef


@dataclass(frozen=True)
class Peek:
    """What a peek saw, and how many of them it failed to make visible again."""

    letters: list[DeadLetter]
    not_released: int


def peek(client: SQSClient, dlq_url: str, limit: int) -> Peek:
    """Receive up to ``limit`` messages, then make every one visible again at once."""
    raws: list[MessageTypeDef] = []
    handles: list[str] = []
    try:
        while len(raws) < limit:
            batch = receive(client, dlq_url, min(BATCH, limit - len(raws)))
            handles += [m["ReceiptHandle"] for m in batch]
            seen = {m["MessageId"] for m in raws}
            # A peek longer than HOLD_S receives its first messages again.
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                break
            raws += fresh
    finally:
        not_released = release(client, dlq_url, handles)
    return Peek([DeadLetter.from_sqs(m) for m in raws], not_released)
