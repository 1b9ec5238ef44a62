"""The transport-neutral view of an SQS message, whichever way it arrived."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a ReceiveMessage entry or a Lambda SQS record carries it."""

    message_id: str
    body: str
    receipt_handle: str
    sent_at: datetime | None = None
    receive_count: int = 1
    group_id: str | None = None
    source_arn: str | None = None
    """The queue's ARN, when the transport says (a Lambda record's eventSourceARN)."""

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

    @property
    def queue_name(self) -> tuple[str, str] | None:
        """(account, queue name) from :attr:`source_arn`, when known."""
        if not self.source_arn:
            return None
        *_, account, name = self.source_arn.split(":")
        return account, name

    def end_to_end_ms(self) -> float | None:
        """Milliseconds since the producer sent it (SQS's SentTimestamp)."""
        if self.sent_at is None:
            return None
        return (datetime.now(UTC) - self.sent_at).total_seconds() * 1000
