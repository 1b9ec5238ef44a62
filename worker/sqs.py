"""SQS plumbing shared by the worker, the Lambda handler and the producer.

The client honours the SDK's own endpoint override (``AWS_ENDPOINT_URL_SQS`` /
``AWS_ENDPOINT_URL``), which is how moto and ElasticMQ are reached locally; nothing
here special-cases them.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import NoRegionError

from worker.processing import Message
from worker.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 10
"""SQS's limit for every batch API."""

MAX_ERROR_ATTRIBUTE = 1024
ERROR, SOURCE_MESSAGE_ID, SOURCE_QUEUE = "error", "source_message_id", "source_queue"
DLQ_ATTRIBUTES = frozenset({ERROR, SOURCE_MESSAGE_ID, SOURCE_QUEUE})
"""Message attributes :class:`DeadLetters` adds to a dead-lettered copy."""


class QueueNotConfigured(RuntimeError):
    """No queue (neither QUEUE_URL nor QUEUE_NAME) or no AWS region is configured."""


def sqs_client(settings: Settings, *, max_pool_connections: int = 10) -> Any:
    """A thread-safe boto3 SQS client with a connection pool sized for our threads.

    Throttling and 5xx answers are retried by botocore itself (standard mode).
    Raises :class:`QueueNotConfigured` when no region can be found.
    """
    config = Config(
        max_pool_connections=max_pool_connections,
        retries={"mode": "standard", "max_attempts": 5},
        # Long polls take up to 20 s; the read timeout must exceed that.
        read_timeout=30,
        connect_timeout=5,
    )
    try:
        return boto3.client("sqs", region_name=settings.aws_region, config=config)
    except NoRegionError:
        raise QueueNotConfigured(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
        ) from None


def queue_url(settings: Settings, client: Any) -> str:
    """QUEUE_URL, or the URL of QUEUE_NAME."""
    if settings.queue_url:
        return settings.queue_url
    if settings.queue_name:
        url: str = client.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
        return url
    raise QueueNotConfigured("set QUEUE_URL or QUEUE_NAME")


def visibility_timeout(settings: Settings, client: Any, url: str) -> int:
    """VISIBILITY_TIMEOUT_S, or the queue's own VisibilityTimeout attribute."""
    if settings.visibility_timeout_s:
        return settings.visibility_timeout_s
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    return int(attrs["Attributes"]["VisibilityTimeout"])


class DeadLetters:
    """Moves malformed messages to the DLQ with the parse error as a message attribute.

    The original body is kept byte for byte so the message can be fixed and redriven.
    """

    def __init__(self, client: Any, dlq_url: str, source_queue_url: str) -> None:
        self._client = client
        self._url = dlq_url
        self._source = source_queue_url

    def send(self, message: Message, error: str) -> None:
        """Send ``message`` to the DLQ; raises if SQS refuses (then do not delete it)."""
        attributes = {
            ERROR: {"DataType": "String", "StringValue": error[:MAX_ERROR_ATTRIBUTE] or "?"},
            SOURCE_MESSAGE_ID: {"DataType": "String", "StringValue": message.message_id},
            SOURCE_QUEUE: {"DataType": "String", "StringValue": self._source},
        }
        extra: dict[str, str] = {}
        if self._url.endswith(".fifo"):
            extra = {
                "MessageGroupId": message.group_id or "malformed",
                "MessageDeduplicationId": message.message_id,
            }
        self._client.send_message(
            QueueUrl=self._url,
            MessageBody=message.body or " ",
            MessageAttributes=attributes,
            **extra,
        )


class Acknowledger:
    """Batches deletes and visibility changes (10 per call) from many threads.

    ``senders`` background threads each send whatever has accumulated every
    ``linger_s`` or as soon as a batch is full. Several, because one thread sending
    DeleteMessageBatch calls one after another became the pipeline's bottleneck (the
    benchmark's worker profile: 99.9 % of that thread's samples inside the call, 324
    applied messages waiting for their delete). A failed delete is logged, not retried:
    the message comes back after its visibility timeout and the engine's idempotency
    makes that harmless.
    """

    def __init__(self, client: Any, url: str, linger_s: float = 0.02, senders: int = 4) -> None:
        self._client = client
        self._url = url
        self._linger_s = linger_s
        self._ops: queue.Queue[tuple[str, str, int] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"sqs-ack-{i}", daemon=True)
            for i in range(senders)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Acknowledgements queued but not yet sent (for back-pressure)."""
        return self._ops.qsize()

    def delete(self, message: Message) -> None:
        """Delete ``message`` (its outcome is recorded)."""
        self._ops.put(("delete", message.receipt_handle, 0))

    def change_visibility(self, message: Message, timeout_s: int) -> None:
        """Make ``message`` visible again in ``timeout_s`` seconds (0: now)."""
        self._ops.put(("visibility", message.receipt_handle, timeout_s))

    def close(self, timeout: float = 10.0) -> None:
        """Send everything queued, then stop the threads."""
        for _ in self._threads:
            self._ops.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def _loop(self) -> None:
        closing = False
        while not closing:
            deletes: list[str] = []
            changes: list[tuple[str, int]] = []
            op = self._ops.get()
            deadline = time.monotonic() + self._linger_s
            while True:
                if op is None:
                    closing = True  # one sentinel per sender: take no other's
                    break
                if op[0] == "delete":
                    deletes.append(op[1])
                else:
                    changes.append((op[1], op[2]))
                if len(deletes) >= BATCH or len(changes) >= BATCH:
                    break
                try:
                    op = self._ops.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
            self._send(deletes, changes)

    def _send(self, deletes: list[str], changes: list[tuple[str, int]]) -> None:
        for start in range(0, len(deletes), BATCH):
            self._call(
                "delete_message_batch",
                [
                    {"Id": str(i), "ReceiptHandle": h}
                    for i, h in enumerate(deletes[start : start + BATCH])
                ],
            )
        for start in range(0, len(changes), BATCH):
            self._call(
                "change_message_visibility_batch",
                [
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": t}
                    for i, (h, t) in enumerate(changes[start : start + BATCH])
                ],
            )

    def _call(self, operation: str, entries: list[dict[str, Any]]) -> None:
        try:
            response = getattr(self._client, operation)(QueueUrl=self._url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 - the messages come back; log and go on
            log.warning(
                "sqs batch call failed", operation=operation, entries=len(entries), error=str(exc)
            )
            return
        for failure in response.get("Failed", []):
            log.warning(
                "sqs batch entry failed",
                operation=operation,
                code=failure.get("Code"),
                error=failure.get("Message"),
            )
