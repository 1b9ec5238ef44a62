"""The FIFO rule: after a failure, hold back the rest of its message group.

On a FIFO queue a message group must apply in order. When one of its messages fails
transiently, applying a later one now would overtake it, so every later message of
that group still in hand is handed back untouched. SQS hands a group out again only
once nothing of it is in flight, so a fresh receive of the group restarts it. (The
same rule as Powertools' ``SqsFifoPartialProcessor``, as a class of its own.)
"""

from __future__ import annotations

import threading

from worker.dispatch.message import Message


class FifoGroups:
    """Which message groups failed since they were last received; thread-safe."""

    def __init__(self) -> None:
        self._failed: set[str] = set()
        self._lock = threading.Lock()

    def received(self, message: Message) -> None:
        """A fresh delivery: SQS had nothing of this group in flight any more."""
        if message.group_id is not None:
            with self._lock:
                self._failed.discard(message.group_id)

    def held_back(self, message: Message) -> bool:
        """True when an earlier message of this group failed: do not apply this one."""
        with self._lock:
            return message.group_id is not None and message.group_id in self._failed

    def failed(self, message: Message) -> None:
        """This message failed: hold back the rest of its group."""
        if message.group_id is not None:
            with self._lock:
                self._failed.add(message.group_id)
