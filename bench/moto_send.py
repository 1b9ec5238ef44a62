"""A diagnostic, bench-only: moto's SendMessage without its O(queue depth) attribute scan.

moto's ``SQSBackend.send_message`` asks ``queue.attributes.get("ContentBasedDeduplication")``
for every message, and ``Queue.attributes`` computes *every* attribute, including the
three approximate message counts, each a scan of the whole queue (visible and in
flight) that evaluates a clock-reading ``visible``/``delayed`` property per message.
A send therefore costs O(depth); the profile of the end-to-end run shows it as the
largest part of moto's CPU. It is the same kind of cost that
``sandbox.sqs._speed_up_moto`` removes from ReceiveMessage, but on the send path.

:func:`cheap_send_attributes` answers that one lookup from the queue's own field while
a send runs, and leaves every other use of ``Queue.attributes`` (GetQueueAttributes, the
producer's backlog gate) unchanged. The bench measures both pipelines with and
without it, so the report can say how much of the gap is moto's and how much is left.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state = threading.local()


@contextmanager
def cheap_send_attributes() -> Iterator[None]:
    """Install the patch for the duration of the block (moto runs in this process)."""
    from moto.sqs import models

    queue_class: Any = models.Queue
    backend_class: Any = models.SQSBackend
    original_attributes: property = queue_class.attributes
    original_send = backend_class.send_message
    getter = original_attributes.fget
    assert getter is not None

    def attributes(queue: Any) -> dict[str, Any]:
        if getattr(_state, "sending", False):
            flag = bool(getattr(queue, "content_based_deduplication", False))
            return {"ContentBasedDeduplication": str(flag).lower()}
        result: dict[str, Any] = getter(queue)
        return result

    def send_message(backend: Any, *args: Any, **kwargs: Any) -> Any:
        _state.sending = True
        try:
            return original_send(backend, *args, **kwargs)
        finally:
            _state.sending = False

    queue_class.attributes = property(attributes)
    backend_class.send_message = send_message
    try:
        yield
    finally:
        queue_class.attributes = original_attributes
        backend_class.send_message = original_send
