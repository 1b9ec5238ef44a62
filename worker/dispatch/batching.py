"""When transfers share one statement: up to k at once, only on cold accounts.

A batch (:meth:`worker.engine.TransferEngine.apply_batch`) is one implicit
transaction, so it pays only while its accounts do not conflict: a conflict on any one
of them fails the whole statement, and its transfers then run one by one (k + 1 round
trips for k transfers). So an account that conflicted recently is *hot* for
:attr:`Batching.hot_window_s` and its transfers run alone, with the single transfer's
own retry loop; everything else still batches. The window is per process: each worker
learns its own hot accounts from its own conflicts.

What never batches: FIFO messages (their order is applied one at a time, and a
failed one holds its group back), and a second delivery of a transfer id already in
the batch (two rows of one id would both match the one recorded result).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from worker.settings import Settings, Statements


@dataclass(frozen=True, slots=True)
class Batching:
    """How many transfers may share a statement, and how long a conflict keeps an
    account out of batches. ``size`` 1 is no batching (the Lambda's setting)."""

    size: int = 1
    hot_window_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Batching:
        """TRANSFER_BATCH and HOT_ACCOUNT_S. The batch statement writes inside WITH, like
        ENGINE_STATEMENTS=single; the documented-SQL variant does not batch."""
        size = settings.transfer_batch if settings.engine_statements is Statements.SINGLE else 1
        return cls(size=size, hot_window_s=settings.hot_account_s)


class HotAccounts:
    """Accounts that conflicted within the window; thread-safe, bounded by pruning."""

    PRUNE_AT = 10_000
    """Entries kept before expired ones are swept (a hot set is small; a sweep is rare)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._until: dict[int, float] = {}
        self._lock = threading.Lock()

    def mark(self, accounts: Iterable[int]) -> None:
        """These accounts just conflicted: keep them out of batches for the window."""
        now = self._clock()
        with self._lock:
            for account in accounts:
                self._until[account] = now + self._window_s
            if len(self._until) > self.PRUNE_AT:
                self._until = {a: t for a, t in self._until.items() if t > now}

    def any_hot(self, *accounts: int) -> bool:
        """True when one of ``accounts`` conflicted within the window."""
        now = self._clock()
        with self._lock:
            return any(self._until.get(account, 0.0) > now for account in accounts)
