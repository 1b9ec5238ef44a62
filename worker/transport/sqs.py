"""SQS plumbing: the one place that talks to SQS for the worker, the Lambda handler,
the producer, the fault suite and the tests.

The client honours the SDK's own endpoint override (``AWS_ENDPOINT_URL_SQS`` /
``AWS_ENDPOINT_URL``), which is how moto and ElasticMQ are reached locally; nothing
here special-cases them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from worker.dispatch.message import Message
from worker.errors import QueueNotConfigured
from worker.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        BatchResultErrorEntryTypeDef,
        MessageTypeDef,
        ReceiveMessageRequestTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

log = structlog.get_logger(__name__)

BATCH = 10
"""SQS's limit for every batch API."""

MAX_ERROR_ATTRIBUTE = 1024
ERROR, SOURCE_MESSAGE_ID, SOURCE_QUEUE = "error", "source_message_id", "source_queue"
DLQ_ATTRIBUTES = frozenset({ERROR, SOURCE_MESSAGE_ID, SOURCE_QUEUE})
"""Message attributes :class:`DeadLetters` adds to a dead-lettered copy."""


def sqs_client(settings: Settings, *, max_pool_connections: int = 10) -> Any:
    """A thread-safe boto3 SQS client with a connection pool sized for our threads.

    Throttling and 5xx answers are retried by botocore itself (standard mode).
    Raises :class:`QueueNotConfigured` when no region can be found. boto3 is imported
    here, not at module level: it is a tenth of a second of a Lambda's cold start, and
    most invocations never need SQS (see :class:`LazyClient`).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

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


class LazyClient:
    """An SQS client made on first use, so that importing and wiring cost nothing.

    The Lambda needs SQS only to dead-letter a malformed record or to delay a failed
    one; building (and importing) boto3 at cold start would slow every first
    invocation for them. Thread-safe: one client, made once.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return getattr(self._client, name)


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


# --- batch calls, queue depth, draining: the one set every SQS user here shares ------

T = TypeVar("T")


def is_fifo(url: str) -> bool:
    """FIFO queue names, and so their URLs, end with ``.fifo``."""
    return url.endswith(".fifo")


def batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices of :data:`BATCH`, the most entries one batch call takes."""
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


@dataclass(frozen=True)
class Sent:
    """What SendMessageBatch calls made of a list of entries, by entry ``Id``."""

    message_ids: dict[str, str]
    """Entry ``Id`` -> the ``MessageId`` SQS gave the message."""
    failed: dict[str, BatchResultErrorEntryTypeDef]
    """Entry ``Id`` -> SQS's ``Failed`` entry (``Code``, ``SenderFault``, ``Message``)."""


def send_messages(
    client: SQSClient, url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef]
) -> Sent:
    """SendMessageBatch, :data:`BATCH` entries per call.

    Entry ``Id`` values must be unique across ``entries``: the answers are merged by
    them. An entry SQS refuses is reported in ``failed``, not resent (an entry in
    neither map got no answer). A call that fails outright raises botocore's error;
    the calls before it were made.
    """
    message_ids: dict[str, str] = {}
    failed: dict[str, BatchResultErrorEntryTypeDef] = {}
    for chunk in batches(entries):
        response = client.send_message_batch(QueueUrl=url, Entries=list(chunk))
        message_ids.update({ok["Id"]: ok["MessageId"] for ok in response.get("Successful", [])})
        failed.update({entry["Id"]: entry for entry in response.get("Failed", [])})
    return Sent(message_ids, failed)


def delete_messages(client: SQSClient, url: str, receipt_handles: Sequence[str]) -> list[str]:
    """DeleteMessageBatch, :data:`BATCH` per call; returns the receipt handles SQS
    refused (those messages come back after their visibility timeout). A call that
    fails outright raises botocore's error."""
    return _refused(client.delete_message_batch, url, receipt_handles, {})


def set_visibility(
    client: SQSClient, url: str, receipt_handles: Sequence[str], timeout_s: int
) -> list[str]:
    """ChangeMessageVisibilityBatch of every message to ``timeout_s`` seconds (0:
    visible now), :data:`BATCH` per call; returns the receipt handles SQS refused. A
    call that fails outright raises botocore's error."""
    return _refused(
        client.change_message_visibility_batch,
        url,
        receipt_handles,
        {"VisibilityTimeout": timeout_s},
    )


def _refused(
    call: Callable[..., Any], url: str, receipt_handles: Sequence[str], extra: dict[str, Any]
) -> list[str]:
    refused: list[str] = []
    for chunk in batches(receipt_handles):
        entries = [{"Id": str(i), "ReceiptHandle": h, **extra} for i, h in enumerate(chunk)]
        response = call(QueueUrl=url, Entries=entries)
        refused += [chunk[int(failure["Id"])] for failure in response.get("Failed", [])]
    return refused


@dataclass(frozen=True)
class QueueDepth:
    """A queue's approximate message counts, as SQS estimates them."""

    visible: int
    """ApproximateNumberOfMessages: waiting to be received."""
    in_flight: int
    """ApproximateNumberOfMessagesNotVisible: received, not yet deleted or made visible."""

    @property
    def total(self) -> int:
        """Every message the queue still holds, visible or in flight (delayed ones aside)."""
        return self.visible + self.in_flight


def queue_depth(client: SQSClient, url: str) -> QueueDepth:
    """The queue's visible and in-flight counts, from one GetQueueAttributes call."""
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return QueueDepth(
        visible=int(attrs["ApproximateNumberOfMessages"]),
        in_flight=int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def receive_batch(
    client: SQSClient,
    url: str,
    count: int = BATCH,
    *,
    visibility_timeout_s: int | None = None,
    wait_s: int = 0,
) -> list[MessageTypeDef]:
    """One ReceiveMessage of up to ``count`` (at most :data:`BATCH`) messages, with every
    message and system attribute. ``visibility_timeout_s`` None keeps the queue's own;
    ``wait_s`` > 0 long-polls, which asks every SQS server, so an empty answer means
    that none was visible."""
    request: ReceiveMessageRequestTypeDef = {
        "QueueUrl": url,
        "MaxNumberOfMessages": count,
        "MessageAttributeNames": ["All"],
        "MessageSystemAttributeNames": ["All"],
        "WaitTimeSeconds": wait_s,
    }
    if visibility_timeout_s is not None:
        request["VisibilityTimeout"] = visibility_timeout_s
    return client.receive_message(**request).get("Messages", [])


def receive_all(
    client: SQSClient,
    url: str,
    *,
    visibility_timeout_s: int | None = None,
    wait_s: int = 0,
    delete: bool = False,
) -> list[MessageTypeDef]:
    """Drain the queue: receive batches (see :func:`receive_batch`) until one brings no
    message not seen before, and return each message once, in the order received.

    Without ``delete`` the messages stay hidden for their visibility timeout, then come
    back; with it each batch is deleted as it arrives (a refused delete is not retried:
    that message comes back).
    """
    seen: dict[str, MessageTypeDef] = {}
    while True:
        batch = receive_batch(client, url, visibility_timeout_s=visibility_timeout_s, wait_s=wait_s)
        if delete and batch:
            delete_messages(client, url, [m["ReceiptHandle"] for m in batch])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        if not fresh:
            return list(seen.values())
        seen.update((m["MessageId"], m) for m in fresh)


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


def dead_letter(dead_letters: DeadLetters | None, message: Message, error: str) -> bool:
    """Send a malformed message to the DLQ; True when it is safe to delete it there.

    False (the message stays, comes back, and the queue's redrive policy catches it in
    the end) when no DLQ_URL is set or SQS refused the send.
    """
    if dead_letters is None:
        log.error("malformed message kept: no DLQ_URL", message_id=message.message_id)
        return False
    try:
        dead_letters.send(message, error or "malformed")
    except Exception as exc:  # noqa: BLE001 - keep the message, log, carry on
        log.error("dead-lettering failed", message_id=message.message_id, error=str(exc))
        return False
    return True


class Acknowledger:
    """Batches deletes and visibility changes (10 per call) from many threads.

    ``senders`` background threads each send whatever has accumulated every
    ``linger_s`` or as soon as a batch is full. Several, because one thread sending
    DeleteMessageBatch calls one after another became the pipeline's bottleneck (the
    benchmark's worker profile: 99.9 % of that thread's samples inside the call, 324
    applied messages waiting for their delete).

    An acknowledgement that could not be sent (SQS unreachable, throttled, a server
    fault on one entry) is retried with exponential backoff for up to
    ``retry_for_s``, not dropped: during an SQS outage the transfers are already
    applied, and every delete that gets through later saves a redelivery. An entry SQS
    refuses as the sender's fault (a receipt handle that is no longer valid) can never
    succeed and is logged once. If a delete is lost anyway the message comes back after
    its visibility timeout and the engine's idempotency makes it a duplicate.
    """

    def __init__(
        self,
        client: Any,
        url: str,
        linger_s: float = 0.02,
        senders: int = 4,
        *,
        retry_for_s: float = 900.0,
        backoff_cap_s: float = 10.0,
    ) -> None:
        self._client = client
        self._url = url
        self._linger_s = linger_s
        self._retry_for_s = retry_for_s
        self._backoff_cap_s = backoff_cap_s
        self._ops: queue.Queue[_Op | None] = queue.Queue()
        self._waiting: set[threading.Timer] = set()
        self._waiting_ops = 0
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"sqs-ack-{i}", daemon=True)
            for i in range(senders)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Acknowledgements queued or waiting for a retry (for back-pressure)."""
        return self._ops.qsize() + self._waiting_ops

    def delete(self, message: Message) -> None:
        """Delete ``message`` (its outcome is recorded)."""
        self._ops.put(_Op("delete", message.receipt_handle))

    def change_visibility(self, message: Message, timeout_s: int) -> None:
        """Make ``message`` visible again in ``timeout_s`` seconds (0: now)."""
        self._ops.put(_Op("visibility", message.receipt_handle, timeout_s))

    def close(self, timeout: float = 10.0) -> None:
        """Send everything queued (retries due later get one last try), then stop."""
        with self._lock:
            self._closed = True
            timers, self._waiting = self._waiting, set()
        for timer in timers:
            timer.cancel()
            timer.function()
        for _ in self._threads:
            self._ops.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def _loop(self) -> None:
        closing = False
        while not closing:
            deletes: list[_Op] = []
            changes: list[_Op] = []
            op = self._ops.get()
            deadline = time.monotonic() + self._linger_s
            while True:
                if op is None:
                    closing = True  # one sentinel per sender: take no other's
                    break
                (deletes if op.kind == "delete" else changes).append(op)
                if len(deletes) >= BATCH or len(changes) >= BATCH:
                    break
                try:
                    op = self._ops.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
            for ops in (deletes, changes):
                for start in range(0, len(ops), BATCH):
                    self._send(ops[start : start + BATCH])

    def _send(self, ops: list[_Op]) -> None:
        """One batch call; what failed transiently is scheduled again."""
        delete = ops[0].kind == "delete"
        operation = "delete_message_batch" if delete else "change_message_visibility_batch"
        entries: list[dict[str, Any]] = [
            {"Id": str(i), "ReceiptHandle": op.receipt_handle}
            if delete
            else {
                "Id": str(i),
                "ReceiptHandle": op.receipt_handle,
                "VisibilityTimeout": op.timeout_s,
            }
            for i, op in enumerate(ops)
        ]
        try:
            response = getattr(self._client, operation)(QueueUrl=self._url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 - SQS unreachable or refusing: retry later
            log.warning(
                "sqs batch call failed, will retry",
                operation=operation,
                entries=len(entries),
                error=str(exc),
            )
            self._retry(ops)
            return
        again = []
        for failure in response.get("Failed", []):
            op = ops[int(failure["Id"])]
            if failure.get("SenderFault", False):
                log.warning(
                    "sqs refused an acknowledgement",
                    operation=operation,
                    code=failure.get("Code"),
                    error=failure.get("Message"),
                )
            else:
                again.append(op)
        if again:
            self._retry(again)

    def _retry(self, ops: list[_Op]) -> None:
        now = time.monotonic()
        live = [op.next_try() for op in ops if now - op.first_tried < self._retry_for_s]
        if len(live) < len(ops):
            log.warning("sqs acknowledgements given up", entries=len(ops) - len(live))
        if not live:
            return
        delay = min(self._backoff_cap_s, 0.2 * 2 ** min(live[0].tries, 10))

        def requeue() -> None:
            with self._lock:
                self._waiting.discard(timer)
                self._waiting_ops -= len(live)
            for op in live:
                self._ops.put(op)

        timer = threading.Timer(delay, requeue)
        timer.daemon = True
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._waiting.add(timer)
                self._waiting_ops += len(live)
        if closed:
            return  # shutting down: the messages come back after their visibility
        timer.start()


@dataclass(frozen=True, slots=True)
class _Op:
    """One acknowledgement: delete, or change visibility to ``timeout_s``."""

    kind: str
    receipt_handle: str
    timeout_s: int = 0
    tries: int = 0
    first_tried: float = field(default_factory=time.monotonic)

    def next_try(self) -> _Op:
        return replace(self, tries=self.tries + 1)
