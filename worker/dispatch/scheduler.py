"""Run transfers in parallel, but never two that touch the same account.

Two transfers on one account inside one process would only conflict with each other
(an OCC abort on DSQL, a lock wait then a serialization failure on PostgreSQL) and
burn retries; holding the second back until the first finishes costs nothing.

Jobs are taken in arrival order, and a job may not overtake an earlier waiting job
that shares an account with it. So transfers on the same account run in the order
they were received, which keeps a busy account from starving a waiting one. FIFO
messages also carry their MessageGroupId as a key, so a group runs in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Slot(Generic[T]):
    """A job and the keys (account ids, FIFO group ids) it needs exclusively."""

    job: T
    keys: frozenset[Hashable] = field(default_factory=frozenset)


class AccountScheduler(Generic[T]):
    """A thread-safe FIFO of jobs with per-account mutual exclusion."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[Slot[T]] = []
        self._busy: set[Hashable] = set()
        self._running = 0

    def put(self, job: T, keys: Iterable[Hashable] = ()) -> None:
        """Queue ``job``; it runs once none of ``keys`` is held by a running job."""
        with self._cond:
            self._waiting.append(Slot(job, frozenset(keys)))
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Slot[T] | None:
        """The oldest runnable job, marked running; None if none became runnable in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                slot = self._first_runnable()
                if slot is not None:
                    self._waiting.remove(slot)
                    self._busy |= slot.keys
                    self._running += 1
                    return slot
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def take_more(self, count: int, accept: Callable[[T], bool]) -> list[Slot[T]]:
        """Up to ``count`` more runnable jobs that ``accept`` takes, without waiting
        (the rest of a batch). The same order rules as :meth:`take`: a job passed over
        still blocks later jobs on its keys."""
        taken: list[Slot[T]] = []
        with self._cond:
            blocked = set(self._busy)
            for slot in list(self._waiting):
                if len(taken) >= count:
                    break
                if not (slot.keys & blocked) and accept(slot.job):
                    self._waiting.remove(slot)
                    self._busy |= slot.keys
                    self._running += 1
                    taken.append(slot)
                blocked |= slot.keys
        return taken

    def done(self, slot: Slot[T]) -> None:
        """Release the accounts of a job returned by :meth:`take`."""
        with self._cond:
            self._busy -= slot.keys
            self._running -= 1
            self._cond.notify_all()

    def drain(self) -> list[T]:
        """Remove and return every job that has not started (for shutdown)."""
        with self._cond:
            jobs = [slot.job for slot in self._waiting]
            self._waiting.clear()
            self._cond.notify_all()
            return jobs

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job waits or runs; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def size(self) -> int:
        """Jobs waiting plus jobs running."""
        with self._cond:
            return len(self._waiting) + self._running

    def _first_runnable(self) -> Slot[T] | None:
        blocked = set(self._busy)
        for slot in self._waiting:
            if not (slot.keys & blocked):
                return slot
            # Later jobs may not overtake this one on any account it waits for.
            blocked |= slot.keys
        return None
