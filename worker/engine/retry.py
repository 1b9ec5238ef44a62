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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from worker.contract import TransferRequest, rejection_reason
from worker.db import purge_broken
from worker.engine.attempt import Attempt, Raced, batch, pipelined, single
from worker.engine.availability import Availability
from worker.errors import (
    ConflictRetriesExhausted,
    DatabaseUnavailable,
    Fault,
    classify,
    one_line,
)
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


@dataclass(frozen=True, slots=True)
class Batched:
    """What :meth:`TransferEngine.apply_batch` did: an outcome per transfer, in order,
    or the exception its own attempt ended in (a
    :class:`~worker.errors.RetryableTransferError`, or anything a single transfer can
    raise); whether the batch statement failed so its transfers ran one by one; the
    fault, when that was a conflict or a connection fault; and whether the server
    refused the statement itself (it will again: stop batching)."""

    outcomes: Sequence[TransferResult | Exception]
    fell_back: bool = False
    fault: Fault | None = None
    refused: bool = False


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
        return self._apply(request, enqueued_at, budget_s, tried=0)

    def _apply(
        self,
        request: TransferRequest,
        enqueued_at: datetime | None,
        budget_s: float | None,
        *,
        tried: int,
    ) -> TransferResult:
        attempt: Attempt = partial(self._attempt, request, rejection_reason(request), enqueued_at)
        budget = self._policy.budget_s if budget_s is None else min(budget_s, self._policy.budget_s)
        return self._run(request, attempt, budget, tried=tried)

    def apply_batch(self, items: Sequence[tuple[TransferRequest, datetime | None]]) -> Batched:
        """Apply transfers on pairwise disjoint accounts, with distinct ids, in one
        statement, once. If that fails (nothing applied: it is one implicit
        transaction), apply each on its own with the retry policy, the batch counted
        as its first attempt. A batch never retries as a batch, so one hot account
        cannot make a retry chain of the others; the caller learns the fault and can
        keep the accounts out of its next batches. Any database error falls back, not
        only the transient ones: a server that refuses the batch statement (one that
        does not take ``unnest`` of arrays, say) must not send good transfers towards
        the DLQ, and every one of them then meets the single statement instead."""
        prepared = [(request, rejection_reason(request), sent) for request, sent in items]
        if self._attempt is pipelined:
            # The documented-SQL variant sends no WITH clause that writes: no batches.
            return Batched(self._one_by_one(items, [None] * len(items), tried=0, fault=None))
        if self._availability is not None and self._availability.down:
            # Each alone fails fast without an attempt, as a single would.
            unapplied = [None] * len(items)
            return Batched(self._one_by_one(items, unapplied, tried=0, fault=None), True)
        fault: Fault | None = None
        try:
            with self._pool.connection(timeout=self._policy.budget_s) as conn:
                answers = batch(prepared, conn)
        except (psycopg.Error, PoolTimeout, Raced) as exc:
            fault = Fault.CONFLICT if isinstance(exc, Raced) else classify(exc)
            if fault is None:
                log.warning(
                    "batch statement failed, applying its transfers one by one",
                    sqlstate=getattr(exc, "sqlstate", None),
                    error=one_line(exc),
                )
            else:
                log.debug("batch failed, applying its transfers one by one", fault=fault.value)
            if fault is Fault.CONNECTION:
                self._purge()
            # Feature not supported, or the statement does not parse or type-check: the
            # server refuses the statement, not these transfers, and tried none of them.
            refused = fault is None and str(getattr(exc, "sqlstate", ""))[:2] in ("0A", "42")
            tried = 0 if refused else 1
            outcomes = self._one_by_one(items, [None] * len(items), tried=tried, fault=fault)
            return Batched(outcomes, True, fault, refused)
        return Batched(self._one_by_one(items, answers, tried=1, fault=None))

    def _one_by_one(
        self,
        items: Sequence[tuple[TransferRequest, datetime | None]],
        answers: Sequence[TransferResult | None],
        *,
        tried: int,
        fault: Fault | None,
    ) -> list[TransferResult | Exception]:
        """The batch's answers, each missing one applied alone after ``tried`` attempts.
        Never raises: one transfer's error is its own outcome, not its neighbours'."""
        outcomes: list[TransferResult | Exception] = []
        for (request, sent), answer in zip(items, answers, strict=True):
            if answer is not None:
                outcomes.append(answer)
            elif tried >= self._policy.max_attempts:
                exhausted = (
                    DatabaseUnavailable if fault is Fault.CONNECTION else ConflictRetriesExhausted
                )
                outcomes.append(
                    exhausted(
                        f"transfer {request.transfer_id} not applied: its batch failed and "
                        f"MAX_ATTEMPTS is {self._policy.max_attempts}",
                        attempts=tried,
                        elapsed_s=0.0,
                    )
                )
            else:
                try:
                    outcomes.append(self._apply(request, sent, None, tried=tried))
                except Exception as exc:  # noqa: BLE001 - the dispatcher's verdict per transfer
                    outcomes.append(exc)
        return outcomes

    def _run(
        self, request: TransferRequest, step: Attempt, budget_s: float, *, tried: int
    ) -> TransferResult:
        """Attempts ``tried + 1`` onwards (``tried``: made already, in a failed batch)."""
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
        attempt = tried + 1
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
