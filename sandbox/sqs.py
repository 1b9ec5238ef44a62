"""A local SQS endpoint: moto's server on loopback, with a transfer queue and its DLQ.

moto is a stand-in for AWS that speaks the real SQS wire protocol over HTTP, so the
worker and producer use unchanged boto3 clients pointed at it through the SDK's own
``AWS_ENDPOINT_URL_SQS``. Out of the box it slows down sharply with queue depth
(about 370 msg/s shallow, 15 msg/s with 2,000 queued on the project machines);
:func:`_fix_moto` removes the worst of it (and a lost-update race), and the demo
still keeps queues shallow by consuming while producing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import boto3

from sandbox.lifecycle import Service
from sandbox.postgres import free_port
from worker.redelivery import RedeliverySchedule

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@dataclass(frozen=True)
class Queues:
    """URLs of a transfer queue and its dead-letter queue."""

    queue_url: str
    dlq_url: str


_sending = threading.local()
"""``queue``: the moto queue whose send path this thread is in, if any (see _fix_moto)."""


class _SendPathAttributes:
    """What a queue's ``attributes`` is while moto's send path reads it: the one
    attribute that path asks for, read from the queue's own field, without the three
    approximate message counts (each a scan of the queue) that the full dict computes.
    Any other lookup fails loudly, so a moto upgrade that reads more cannot get a
    silently wrong answer."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def get(self, key: str, default: Any = None) -> Any:
        if key != "ContentBasedDeduplication":
            raise LookupError(
                f"moto's send path read {key!r}: sandbox.sqs._fix_moto is out of date"
            )
        if not self._queue.fifo_queue:
            return default  # the full dict lists the FIFO attributes for FIFO queues only
        value = self._queue.content_based_deduplication  # set by Queue._set_attributes
        return str(value).lower() if isinstance(value, bool) else value


@contextmanager
def _send_path(queue: Any) -> Iterator[None]:
    """Within the block, ``queue.attributes`` on this thread is a _SendPathAttributes.
    Not for a queue with moto's own Lambda event source mappings: ``add_message`` then
    runs a receive and an invocation inside the send, so it keeps the stock path."""
    if queue.lambda_event_source_mappings:
        yield
        return
    previous = getattr(_sending, "queue", None)
    _sending.queue = queue
    try:
        yield
    finally:
        _sending.queue = previous


def _fix_moto() -> None:
    """Three repairs to moto's SQS, so the stand-in behaves like SQS under load.

    1. **A lost-update race.** ``Queue.delete_message`` rebuilds the message list and
       assigns it back without the lock that ``add_message`` appends under, so a message
       sent while another is being deleted can vanish. With several workers deleting
       while a producer sends, the fault suite saw transfers that no worker ever
       received. Deleting under the same lock closes the race.
    2. **O(depth^2) receives.** ReceiveMessage asks, for every message it looks at,
       whether the message is within the retention period, and answers by computing
       *every* queue attribute (approximate counts that scan the whole queue) three
       times over; most of why moto slows down as its queue grows. Reading the
       retention period straight from the queue gives the same answer in O(1).
    3. **O(depth) sends.** For every message, SendMessage and SendMessageBatch ask
       ``queue.attributes.get("ContentBasedDeduplication")``: once in
       ``SQSBackend.send_message`` (standard queues too), and on FIFO queues twice more
       in ``_validate_message`` (which SendMessageBatch also runs for every entry up
       front) and once in ``Queue.add_message`` (also the redrive into a FIFO DLQ).
       Each ``attributes`` builds the whole dict, with ApproximateNumberOfMessages,
       ...NotVisible and ...Delayed, three scans of the queue that read the clock per
       message: 3 scans per message sent to a standard queue, 12 to 18 on a FIFO queue,
       for one flag. While those three
       functions run, the queue they work on answers that lookup from its own field
       instead (:class:`_SendPathAttributes`: the same string, or None on a standard
       queue, as the full dict), so a send costs the same at any depth. Every other
       reader (GetQueueAttributes, CreateQueue's comparison, other threads, other
       queues) still gets the full dict.
    """
    from moto.core.utils import unix_time
    from moto.sqs.models import Message, Queue, SQSBackend

    if getattr(Queue, "_dsql_transfers_fixed", False):
        return
    delete_message = Queue.delete_message
    stock_attributes: Callable[[Queue], dict[str, Any]] = vars(Queue)["attributes"].fget
    stock_send = SQSBackend.send_message
    stock_validate = SQSBackend._validate_message
    stock_add = Queue.add_message

    def locked_delete(self: Queue, receipt_handle: str) -> None:
        with self._messages_lock:
            delete_message(self, receipt_handle)

    def within_retention(self: SQSBackend, queue_name: str, message: Message) -> bool:
        # Set from the MessageRetentionPeriod attribute by Queue._set_attributes.
        retention_s = int(getattr(self.get_queue(queue_name), "message_retention_period"))  # noqa: B009
        retain_until = retention_s + (message.sent_timestamp or 0) / 1000
        return bool(retain_until > unix_time())

    def attributes(self: Queue) -> Any:
        if getattr(_sending, "queue", None) is self:
            return _SendPathAttributes(self)
        return stock_attributes(self)

    def send_message(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Message:
        queue = self.queues.get(queue_name)
        if queue is None:
            return stock_send(self, queue_name, *args, **kwargs)  # raises QueueDoesNotExist
        with _send_path(queue):
            return stock_send(self, queue_name, *args, **kwargs)

    def validate_message(self: SQSBackend, queue: Queue, *args: Any, **kwargs: Any) -> None:
        with _send_path(queue):
            stock_validate(self, queue, *args, **kwargs)

    def add_message(self: Queue, message: Message) -> None:
        with _send_path(self):
            stock_add(self, message)

    Queue.delete_message = locked_delete  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = within_retention  # type: ignore[method-assign]
    Queue.attributes = property(attributes)  # type: ignore[method-assign,assignment]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]
    SQSBackend._validate_message = validate_message  # type: ignore[method-assign]
    Queue.add_message = add_message  # type: ignore[method-assign]
    Queue._dsql_transfers_fixed = True  # type: ignore[attr-defined]


class LocalSqs(Service):
    """moto's ThreadedMotoServer on 127.0.0.1:``port``."""

    def __init__(self, port: int | None = None) -> None:
        from moto.server import ThreadedMotoServer

        _fix_moto()
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def stop_serving(self) -> None:
        """An SQS outage: close the port (connections are refused) but keep every queue
        and message, which live in moto's in-process backend, not in the server."""
        self._server.stop()

    def resume_serving(self) -> None:
        """End the outage: serve the same queues on the same port again."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    @property
    def endpoint(self) -> str:
        """Value for ``AWS_ENDPOINT_URL_SQS``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that points boto3 at this server with throwaway credentials."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL_SQS": self.endpoint}

    def client(self) -> Any:
        """A boto3 SQS client for this server."""
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
        )

    def create_queues(
        self,
        name: str = "transfers",
        *,
        visibility_timeout_s: int = 30,
        max_receive_count: int | None = None,
        fifo: bool = False,
    ) -> Queues:
        """Create ``name`` and ``name-dlq`` with a redrive policy, like infra/ does: by
        default maxReceiveCount is the one the default redelivery schedule needs."""
        if max_receive_count is None:
            max_receive_count = RedeliverySchedule().max_receive_count
        sqs = self.client()
        suffix = ".fifo" if fifo else ""
        fifo_attrs = {"FifoQueue": "true"} if fifo else {}
        dlq_url = sqs.create_queue(
            QueueName=f"{name}-dlq{suffix}",
            Attributes={"MessageRetentionPeriod": "1209600", **fifo_attrs},
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=f"{name}{suffix}",
            Attributes={
                "VisibilityTimeout": str(visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
                ),
                **fifo_attrs,
            },
        )["QueueUrl"]
        return Queues(queue_url=queue_url, dlq_url=dlq_url)

    def start(self) -> Self:
        """Start serving in a background thread."""
        # werkzeug logs every request line to stderr; the demo's output is the point.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        return self

    def close(self) -> None:
        """Stop serving."""
        self._server.stop()
