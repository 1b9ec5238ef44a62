"""A stand-in for Lambda's SQS event source mapping, for tests and local runs.

moto's own Lambda emulation ignores ``batchItemFailures``, so this drives the real
handler the way the service does: receive up to ``batch_size`` messages with their
system attributes, hand them over as a Lambda SQS event, then delete every record the
response does not name. Reported records are left alone, so they come back when their
visibility expires: after the queue's timeout, or sooner or later if the handler set
their visibility itself (the redelivery schedule). The queue's redrive policy sees
every receive, exactly as with the real mapping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], dict[str, list[dict[str, str]]]]


class Context:
    """The part of the Lambda context object the handler uses."""

    def __init__(self, timeout_s: float) -> None:
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the invocation would time out."""
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


@dataclass
class MappingStats:
    """What the mapping did, for assertions."""

    invocations: int = 0
    records: int = 0
    reported: int = 0
    deleted: int = 0
    receive_counts: dict[str, int] = field(default_factory=dict)
    """Message id -> ApproximateReceiveCount of the receive that deleted it."""


class EventSourceMapping:
    """Polls ``queue_url`` and invokes ``handler`` until :meth:`stop`."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        handler: Handler,
        *,
        queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:transfers",
        batch_size: int = 10,
        function_timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._url = queue_url
        self._arn = queue_arn
        self._handler = handler
        self._batch_size = batch_size
        self._timeout_s = function_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="esm", daemon=True)
        self.stats = MappingStats()

    def __enter__(self) -> EventSourceMapping:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop polling once the current invocation returns."""
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=self._batch_size,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:  # noqa: BLE001 - the real mapping retries its polls too
                self._stop.wait(1)
                continue
            if messages:
                self._invoke(messages)

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        records = [self._record(m) for m in messages]
        response = self._handler({"Records": records}, Context(self._timeout_s))
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self._client.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        stats = self.stats
        stats.invocations += 1
        stats.records += len(records)
        stats.reported += len(failed)
        stats.deleted += len(done)
        for m in done:
            stats.receive_counts[m["MessageId"]] = int(m["Attributes"]["ApproximateReceiveCount"])

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": "us-east-1",
        }
