"""Dead letters as ``peek`` and the copy take them: received, read, copied, released.

Both receive with every attribute and hold what they received for :data:`HOLD_S`
only, the safety net should the release never happen; what they leave behind is made
visible again at once (:func:`release`). A :class:`DeadLetter` carries the diagnostics
the worker attached when it dead-lettered the message
(:data:`~worker.transport.sqs.DLQ_ATTRIBUTES`); :func:`redrive_entry` is the queue's
copy of a message, which keeps the body byte for byte and every other attribute but
drops those: they describe the DLQ copy, and a redriven message that fails again gets
fresh ones from the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer.sqs import SQS_ERRORS
from worker.contract import parse_body
from worker.dispatch import Message
from worker.errors import MalformedRequest
from worker.transport.sqs import (
    DLQ_ATTRIBUTES,
    ERROR,
    SOURCE_MESSAGE_ID,
    SOURCE_QUEUE,
    batches,
    receive_batch,
    set_visibility,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

HOLD_S = 30
"""Visibility timeout of our receives: how long a message stays hidden if we die."""
RECEIVE_WAIT_S = 1
"""A (short) long poll asks every SQS server, so an empty answer means none visible."""


def receive(client: SQSClient, url: str, count: int) -> list[MessageTypeDef]:
    """Up to ``count`` messages with all their attributes, held for :data:`HOLD_S`."""
    return receive_batch(client, url, count, visibility_timeout_s=HOLD_S, wait_s=RECEIVE_WAIT_S)


def release(client: SQSClient, url: str, handles: Sequence[str]) -> int:
    """Make received messages visible now; returns how many could not be (they come
    back by themselves after :data:`HOLD_S`). SQS errors do not raise: a batch that
    could not be sent counts as not released."""
    failed = 0
    for chunk in batches(handles):
        try:
            failed += len(set_visibility(client, url, chunk, 0))
        except SQS_ERRORS:
            failed += len(chunk)
    return failed


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ message with the diagnostics the worker attached (None when absent, e.g.
    for a message the queue's redrive policy moved)."""

    message: Message
    error: str | None
    source_message_id: str | None
    source_queue: str | None

    @classmethod
    def from_sqs(cls, raw: MessageTypeDef) -> DeadLetter:
        """From a ``receive_message`` entry received with all attributes."""
        attributes = raw.get("MessageAttributes", {})

        def text(name: str) -> str | None:
            return attributes[name].get("StringValue") if name in attributes else None

        return cls(
            message=Message.from_sqs(dict(raw)),
            error=text(ERROR),
            source_message_id=text(SOURCE_MESSAGE_ID),
            source_queue=text(SOURCE_QUEUE),
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: every field, the whole body."""
        m = self.message
        return {
            "message_id": m.message_id,
            "sent_at": m.sent_at.isoformat() if m.sent_at else None,
            "receive_count": m.receive_count,
            "group_id": m.group_id,
            "error": self.error,
            "source_message_id": self.source_message_id,
            "source_queue": self.source_queue,
            "body": m.body,
        }


def redrive_entry(
    entry_id: str, raw: MessageTypeDef, *, fifo: bool
) -> SendMessageBatchRequestEntryTypeDef:
    """The queue's copy of a DLQ message: same body, attributes minus the worker's
    diagnostics.

    On a FIFO queue the copy keeps the message group (or uses the payer, as the
    producer does) and is deduplicated by its DLQ message id: never by the original's
    deduplication id, which SQS would still remember for 5 minutes and silently drop.
    """
    entry: SendMessageBatchRequestEntryTypeDef = {"Id": entry_id, "MessageBody": raw["Body"]}
    attributes: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in raw.get("MessageAttributes", {}).items():
        if name in DLQ_ATTRIBUTES:
            continue
        # Only the value that is set: SQS refuses the (unsupported) list values.
        kept: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            kept["BinaryValue"] = value["BinaryValue"]
        attributes[name] = kept
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo:
        entry["MessageGroupId"] = _group_id(raw)
        entry["MessageDeduplicationId"] = raw["MessageId"]
    return entry


def _group_id(raw: MessageTypeDef) -> str:
    group = raw.get("Attributes", {}).get("MessageGroupId")
    if group:
        return group
    try:  # a standard DLQ feeding a FIFO queue: group by payer, as the producer does
        return str(parse_body(raw["Body"], raw["MessageId"]).payer_id)
    except MalformedRequest:
        return "redrive"
