"""One SQS message in, one decision out: the step the worker and the Lambda share.

``contract -> engine -> results`` for a single message, plus the answer the
transport needs: what to do with the message.

- :attr:`Disposition.ACK`: an outcome is recorded (committed, rejected, or an earlier
  delivery recorded it): delete the message.
- :attr:`Disposition.RETRY`: nothing was applied (conflicts or the database outlasted
  the retry budget, or something unexpected broke): leave the message for redelivery.
- :attr:`Disposition.DEAD_LETTER`: the body breaks the contract and never will parse:
  move it to the DLQ with the error attached, then delete it.

Nothing here raises: an unexpected exception becomes ``RETRY`` and is logged with its
traceback, so a poison message cannot kill the worker (the queue's redrive policy
eventually moves it to the DLQ).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from worker.contract import TransferRequest, parse_body
from worker.engine import TransferEngine
from worker.errors import MalformedRequest, RetryableTransferError
from worker.metrics import Metrics
from worker.outcomes import TransferResult

log = structlog.get_logger("worker.transfer")


class Disposition(StrEnum):
    """What the transport should do with the message."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Message:
    """The transport-neutral view of an SQS message (ReceiveMessage or Lambda event)."""

    message_id: str
    body: str
    receipt_handle: str
    sent_at: datetime | None = None
    receive_count: int = 1
    group_id: str | None = None
    source_arn: str | None = None
    """The queue's ARN, when the transport says (a Lambda record's eventSourceARN)."""

    def queue_url(self, client: Any) -> str | None:
        """The URL of the queue named by :attr:`source_arn`, asked of SQS."""
        if not self.source_arn:
            return None
        *_, account, name = self.source_arn.split(":")
        url: str = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        return url

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> Message:
        """From a boto3 ``receive_message`` entry (attributes requested by name)."""
        return cls._build(
            raw["MessageId"], raw.get("Body", ""), raw["ReceiptHandle"], raw.get("Attributes", {})
        )

    @classmethod
    def from_lambda(cls, record: dict[str, Any]) -> Message:
        """From one record of a Lambda SQS event."""
        message = cls._build(
            record["messageId"], record.get("body", ""), record.get("receiptHandle", ""),
            record.get("attributes", {}),
        )  # fmt: skip
        return replace(message, source_arn=record.get("eventSourceARN"))

    @classmethod
    def _build(cls, message_id: str, body: str, receipt: str, attrs: dict[str, str]) -> Message:
        sent = attrs.get("SentTimestamp")
        return cls(
            message_id=message_id,
            body=body,
            receipt_handle=receipt,
            sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
            receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
            group_id=attrs.get("MessageGroupId"),
        )


@dataclass(frozen=True, slots=True)
class Handled:
    """The decision for one message, with what led to it."""

    disposition: Disposition
    result: TransferResult | None = None
    error: str | None = None


class Processor:
    """Parses and applies messages through one engine, logging one line per transfer."""

    def __init__(self, engine: TransferEngine, metrics: Metrics) -> None:
        self._engine = engine
        self._metrics = metrics

    def parse(self, message: Message) -> TransferRequest | Handled:
        """The request in ``message``, or a DEAD_LETTER decision saying why not."""
        try:
            return parse_body(message.body, message.message_id)
        except MalformedRequest as exc:
            log.warning("malformed message", message_id=message.message_id, error=str(exc))
            self._metrics.malformed()
            return Handled(Disposition.DEAD_LETTER, error=str(exc))

    def apply(
        self, message: Message, request: TransferRequest, *, budget_s: float | None = None
    ) -> Handled:
        """Apply a parsed request; never raises. ``budget_s`` caps the retry budget."""
        try:
            result = self._engine.apply(request, enqueued_at=message.sent_at, budget_s=budget_s)
        except RetryableTransferError as exc:
            log.warning(
                "transfer failed, will be redelivered",
                transfer_id=str(request.transfer_id),
                message_id=message.message_id,
                outcome="failed",
                attempts=exc.attempts,
                receive_count=message.receive_count,
                error=str(exc),
            )
            self._metrics.failed(exc.attempts)
            return Handled(Disposition.RETRY, error=str(exc))
        except Exception as exc:
            log.exception(
                "unexpected error, message left for redelivery",
                transfer_id=str(request.transfer_id),
                message_id=message.message_id,
            )
            self._metrics.failed(1)
            return Handled(Disposition.RETRY, error=f"{type(exc).__name__}: {exc}")
        log.info(
            "transfer",
            transfer_id=str(result.transfer_id),
            message_id=message.message_id,
            outcome=result.status.value,
            reason=result.reason.value if result.reason else None,
            duplicate=result.duplicate,
            attempts=result.attempts,
            receive_count=message.receive_count,
            transaction_ms=_round(result.transaction_ms),
        )
        self._metrics.outcome(result, end_to_end_ms=_end_to_end_ms(message))
        return Handled(Disposition.ACK, result=result)

    def process(self, message: Message) -> Handled:
        """Parse, then apply: the whole step for transports that need no scheduling."""
        parsed = self.parse(message)
        return parsed if isinstance(parsed, Handled) else self.apply(message, parsed)


def exclusive_keys(message: Message, request: TransferRequest) -> set[Hashable]:
    """What a transfer must hold alone while it runs: both accounts, and on a FIFO
    queue its message group, so a group is applied in order."""
    keys: set[Hashable] = {request.payer_id, request.payee_id}
    if message.group_id is not None:
        keys.add(("group", message.group_id))
    return keys


def _end_to_end_ms(message: Message) -> float | None:
    if message.sent_at is None:
        return None
    return (datetime.now(UTC) - message.sent_at).total_seconds() * 1000


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
