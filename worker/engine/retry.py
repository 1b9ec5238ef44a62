"""The retry loop around one attempt: :class:`TransferEngine`, and its :class:`RetryPolicy`.

Conflicts (DSQL reports them at COMMIT, PostgreSQL at the UPDATE) and connection
faults (:func:`worker.errors.classify`) are retried with full-jitter exponential
backoff within the policy's attempts and time budget; a transfer that runs out raises
a :class:`~worker.errors.RetryableTransferError` and has not been applied. A database
found unreachable (:mod:`worker.engine.availability`) ends the loop at once instead.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from worker.contract import TransferRequest, rejection_reason
from worker.db import purge_broken
from worker.engine.attempt import Attempt, Raced, pipelined, single
from worker.engine.availability import Availability
from worker.errors import ConflictRetriesExhausted, DatabaseUnavailable, Fault, classify
from worker.outcomes import TransferResult
from worker.settings import Settings, Statements

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[Any]

_JITTER = random.Random()
"""Our own generator: jitter must not depend on (or disturb) the global random state."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts, a wall-clock budget, and exponential backoff with full jitter.

    Full jitter (sleep uniformly in ``[0, min(cap, base * 2**n)]``) spreads retries of
    transactions that conflicted with each other, so they do not collide again. Build
    it with :meth:`from_settings`; the defaults live in :class:`~worker.settings.Settings`.
    """

    max_attempts: int
    budget_s: float
    base_s: float
    cap_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured by MAX_ATTEMPTS, RETRY_BUDGET_S and BACKOFF_*_MS."""
        return cls(
            max_attempts=settings.max_attempts,
            budget_s=settings.retry_budget_s,
            base_s=settings.backoff_base_ms / 1000,
            cap_s=settings.backoff_max_ms / 1000,
        )

    def backoff_s(self, failed_attempts: int) -> float:
        """Seconds to sleep after ``failed_attempts`` (>= 1) failures."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(failed_attempts - 1, 30))
        return _JITTER.uniform(0, ceiling)


class TransferEngine:
    """Applies :class:`TransferRequest` values to the database, each exactly once.

    Thread-safe: every call borrows its own connection from the pool. The pool's
    connections must be in autocommit mode (see :func:`worker.db.create_pool`): the
    engine writes ``BEGIN`` and ``COMMIT`` itself so that they travel in the same
    pipeline batch as the statements around them.
    """

    def __init__(
        self,
        pool: ConnectionPool[Connection],
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        availability: Availability | None = None,
        statements: Statements = Statements.SINGLE,
    ) -> None:
        self._pool = pool
        self._policy = policy or RetryPolicy.from_settings(Settings())
        self._sleep = sleep
        self._availability = availability
        self._attempt = single if statements is Statements.SINGLE else pipelined

    def apply(
        self,
        request: TransferRequest,
        *,
        enqueued_at: datetime | None = None,
        budget_s: float | None = None,
    ) -> TransferResult:
        """Apply ``request`` once, or report the result an earlier delivery recorded.

        Returns a committed or rejected :class:`TransferResult` (``duplicate=True`` when
        the outcome was already recorded). Raises
        :class:`~worker.errors.RetryableTransferError` when conflicts or connection
        faults outlast the retry policy; nothing is applied in that case. ``budget_s``
        can only shorten the policy's time budget (a Lambda's remaining time).
        """
        attempt: Attempt = partial(self._attempt, request, rejection_reason(request), enqueued_at)
        budget = self._policy.budget_s if budget_s is None else min(budget_s, self._policy.budget_s)
        return self._run(request, attempt, budget)

    def _run(self, request: TransferRequest, step: Attempt, budget_s: float) -> TransferResult:
        policy = self._policy
        started = time.monotonic()
        deadline = started + budget_s
        availability = self._availability
        if availability is not None and availability.down:
            # Holding back: do not spend the budget (and a receive) on a known outage.
            raise DatabaseUnavailable(
                f"transfer {request.transfer_id} not attempted: the database is unreachable",
                attempts=0,
                elapsed_s=0.0,
            )
        attempt = 1
        connection_faults = 0
        while True:
            try:
                with self._pool.connection(timeout=max(deadline - time.monotonic(), 0.001)) as conn:
                    result = step(conn, attempt)
                if availability is not None and availability.down:
                    availability.reachable()
                return result
            except Exception as exc:
                fault = Fault.CONFLICT if isinstance(exc, Raced) else classify(exc)
                if fault is None:
                    raise
                elapsed = time.monotonic() - started
                if fault is Fault.CONNECTION:
                    connection_faults += 1
                    # One broken connection is a restart or a terminated backend: the
                    # retry on a fresh one usually works. A second in a row, or no
                    # connection at all, means the database is unreachable.
                    if availability is not None and (
                        connection_faults >= 2 or isinstance(exc, PoolTimeout)
                    ):
                        availability.unreachable(f"{type(exc).__name__}: {exc}")
                        raise DatabaseUnavailable(
                            f"transfer {request.transfer_id} not applied: the database is "
                            f"unreachable ({type(exc).__name__})",
                            attempts=attempt,
                            elapsed_s=elapsed,
                        ) from exc
                log.debug(
                    "transfer attempt failed",
                    attempt=attempt,
                    fault=fault.value,
                    sqlstate=getattr(exc, "sqlstate", None),
                )
                if fault is Fault.CONNECTION:
                    self._purge()
                if attempt >= policy.max_attempts or time.monotonic() >= deadline:
                    error = (
                        ConflictRetriesExhausted if fault is Fault.CONFLICT else DatabaseUnavailable
                    )
                    raise error(
                        f"transfer {request.transfer_id} not applied after {attempt} attempts "
                        f"in {elapsed:.3f}s ({fault.value}: {type(exc).__name__})",
                        attempts=attempt,
                        elapsed_s=elapsed,
                    ) from exc
                self._sleep(min(policy.backoff_s(attempt), max(deadline - time.monotonic(), 0)))
                attempt += 1

    def _purge(self) -> None:
        try:
            purge_broken(self._pool)
        except Exception:
            log.debug("pool check failed", exc_info=True)
