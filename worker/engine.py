"""The transfer: its SQL, top to bottom, and the retry loop around it.

A committed, uncontended transfer costs two network round trips, both in psycopg
pipeline mode:

1. ``BEGIN ISOLATION LEVEL REPEATABLE READ`` + read any earlier result for this
   ``transfer_id`` + the two balance updates (lower account id first, so crossing
   transfers cannot deadlock on PostgreSQL), then one sync.
2. Insert the result row + ``COMMIT``, then one sync.

The balance checks happen in Python between the two, on the rows the updates
returned: payer missing, payee missing, or the payer's balance gone negative all roll
back and record a rejection instead. The result row is written in the same transaction
as the money movement, so a transfer and its outcome commit together or not at all;
that makes the whole thing idempotent by ``transfer_id`` without an in-progress
marker that a crashed worker could leave behind.

Conflicts (DSQL reports them at COMMIT, PostgreSQL at the UPDATE) and connection
faults are retried with backoff within :class:`~worker.retry.RetryPolicy`; a transfer
that runs out raises a :class:`~worker.errors.RetryableTransferError` and has not
been applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, LiteralString

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from worker.availability import Availability
from worker.contract import TransferRequest, fits_numeric, rejection_reason
from worker.db import purge_broken
from worker.errors import ConflictRetriesExhausted, DatabaseUnavailable
from worker.outcomes import Reason, Status, TransferResult
from worker.retry import Fault, RetryPolicy, classify

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[Any]

RESULT_COLUMNS: LiteralString = (
    "transfer_id, payer_id, payee_id, amount, status, reason, payer_balance,"
    " attempts, transaction_ms, enqueued_at, completed_at"
)

BEGIN: LiteralString = "BEGIN ISOLATION LEVEL REPEATABLE READ"
COMMIT: LiteralString = "COMMIT"
ROLLBACK: LiteralString = "ROLLBACK"

# --- round trip 1: earlier outcome? then move the money ----------------------------

SELECT_RESULT: LiteralString = (
    "SELECT " + RESULT_COLUMNS + " FROM transfer_results WHERE transfer_id = %(transfer_id)s"
)

DEBIT: LiteralString = """
    UPDATE accounts SET balance = balance - %(amount)s
    WHERE id = %(payer_id)s
    RETURNING balance
"""

CREDIT: LiteralString = """
    UPDATE accounts SET balance = balance + %(amount)s
    WHERE id = %(payee_id)s
    RETURNING balance
"""

# --- round trip 2: record the outcome with the money movement, then COMMIT ----------

INSERT_RESULT: LiteralString = (
    "INSERT INTO transfer_results (" + RESULT_COLUMNS + ") VALUES ("
    " %(transfer_id)s, %(payer_id)s, %(payee_id)s, %(amount)s, %(status)s, %(reason)s,"
    " %(payer_balance)s, %(attempts)s, %(transaction_ms)s, %(enqueued_at)s, %(completed_at)s)"
)

# --- a rejection is recorded on its own, first writer wins ---------------------------

INSERT_REJECTION: LiteralString = (
    INSERT_RESULT + " ON CONFLICT (transfer_id) DO NOTHING RETURNING transfer_id"
)


class _Raced(Exception):
    """The result row appeared between our snapshot and our insert; read it next time."""


Step = Callable[[Connection, int], TransferResult]


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
    ) -> None:
        self._pool = pool
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._availability = availability

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
        reason = rejection_reason(request)
        step = (
            partial(_record_only, request, reason, enqueued_at)
            if reason is not None
            else partial(_transfer, request, enqueued_at)
        )
        budget = self._policy.budget_s if budget_s is None else min(budget_s, self._policy.budget_s)
        return self._run(request, step, budget)

    # --- the retry loop ---------------------------------------------------------------

    def _run(self, request: TransferRequest, step: Step, budget_s: float) -> TransferResult:
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
                fault = Fault.CONFLICT if isinstance(exc, _Raced) else classify(exc)
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
                    transfer_id=str(request.transfer_id),
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


# --- one attempt of a transfer: two round trips ----------------------------------------


def _transfer(
    request: TransferRequest, enqueued_at: datetime | None, conn: Connection, attempt: int
) -> TransferResult:
    params: dict[str, Any] = {
        "transfer_id": request.transfer_id,
        "payer_id": request.payer_id,
        "payee_id": request.payee_id,
        "amount": request.amount,
    }
    payer_first = request.payer_id < request.payee_id
    started = time.perf_counter()
    try:
        with _pipeline(conn) as pipeline:
            # Round trip 1: the explicit sync.
            conn.execute(BEGIN)
            earlier = conn.execute(SELECT_RESULT, params)
            first = conn.execute(DEBIT if payer_first else CREDIT, params)
            second = conn.execute(CREDIT if payer_first else DEBIT, params)
            pipeline.sync()
            debit, credit = (first, second) if payer_first else (second, first)
            outcome = _decide(
                request, earlier, debit, credit,
                attempt=attempt, started=started, enqueued_at=enqueued_at,
            )  # fmt: skip
            # Round trip 2: what is queued now goes out with the sync on leaving.
            pending = _queue_finish(conn, request, outcome, enqueued_at, attempt)
    except pg_errors.NumericValueOutOfRange:
        # The credit would overflow numeric(18,6): rare enough to pay a round trip.
        conn.execute(ROLLBACK)
        return _record_only(request, Reason.BALANCE_OVERFLOW, enqueued_at, conn, attempt)
    if pending is not None:
        return pending.outcome(request, attempt)
    assert isinstance(outcome, TransferResult)  # a Reason always leaves a pending record
    return outcome


@contextmanager
def _pipeline(conn: Connection) -> Iterator[psycopg.Pipeline]:
    """``conn.pipeline()`` that re-raises a failed statement's own error, quietly.

    psycopg may raise a statement's error at any later ``execute`` or at the sync. If
    it escapes the pipeline block, psycopg's exit trips over the aborted statements
    still queued and logs a spurious "error ignored terminating" warning; catching it
    inside and re-raising after the exit keeps the logs for real problems. The
    caller's pool rolls back the failed transaction.
    """
    failure: psycopg.Error | None = None
    try:
        with conn.pipeline() as pipeline:
            try:
                yield pipeline
            except psycopg.Error as exc:
                failure = exc
    except pg_errors.PipelineAborted:
        if failure is None:
            raise
    if failure is not None:
        raise failure


def _queue_finish(
    conn: Connection,
    request: TransferRequest,
    outcome: TransferResult | Reason,
    enqueued_at: datetime | None,
    attempt: int,
) -> _PendingRejection | None:
    """Queue COMMIT with the result row, or ROLLBACK (plus the rejection's record)."""
    if isinstance(outcome, Reason):
        conn.execute(ROLLBACK)
        return _queue_rejection(conn, request, outcome, enqueued_at, attempt)
    if outcome.duplicate:
        conn.execute(ROLLBACK)
    else:
        conn.execute(INSERT_RESULT, _row_params(outcome))
        conn.execute(COMMIT)
    return None


def _decide(
    request: TransferRequest,
    earlier: psycopg.Cursor[Any],
    debit: psycopg.Cursor[Any],
    credit: psycopg.Cursor[Any],
    *,
    attempt: int,
    started: float,
    enqueued_at: datetime | None,
) -> TransferResult | Reason:
    """After round trip 1: the earlier result, a rejection reason, or the result to commit."""
    row = earlier.fetchone()
    if row is not None:
        return _repeat(request, row, attempt)
    payer, payee = debit.fetchone(), credit.fetchone()
    if payer is None:
        return Reason.PAYER_NOT_FOUND
    if payee is None:
        return Reason.PAYEE_NOT_FOUND
    if payer[0] < 0:
        return Reason.INSUFFICIENT_FUNDS
    return TransferResult(
        transfer_id=request.transfer_id,
        payer_id=request.payer_id,
        payee_id=request.payee_id,
        amount=request.amount,
        status=Status.COMMITTED,
        reason=None,
        payer_balance=payer[0],
        attempts=attempt,
        transaction_ms=(time.perf_counter() - started) * 1000,
        enqueued_at=enqueued_at,
        completed_at=datetime.now(UTC),
    )


def _record_only(
    request: TransferRequest,
    reason: Reason,
    enqueued_at: datetime | None,
    conn: Connection,
    attempt: int,
) -> TransferResult:
    """A request rejected before touching any account: one round trip to record it."""
    with _pipeline(conn):
        rejection = _queue_rejection(conn, request, reason, enqueued_at, attempt)
    return rejection.outcome(request, attempt)


@dataclass(frozen=True, slots=True)
class _PendingRejection:
    """A queued rejection insert; read its outcome once the pipeline has synced."""

    result: TransferResult
    earlier: psycopg.Cursor[Any]
    inserted: psycopg.Cursor[Any]

    def outcome(self, request: TransferRequest, attempt: int) -> TransferResult:
        if self.inserted.fetchone() is not None:
            return self.result
        row = self.earlier.fetchone()
        if row is None:
            raise _Raced
        return _repeat(request, row, attempt)


def _queue_rejection(
    conn: Connection,
    request: TransferRequest,
    reason: Reason,
    enqueued_at: datetime | None,
    attempt: int,
) -> _PendingRejection:
    """Queue the recording of a rejection unless the transfer_id already has a result
    (first writer wins: ON CONFLICT DO NOTHING, and the earlier row is read back)."""
    result = TransferResult(
        transfer_id=request.transfer_id,
        payer_id=request.payer_id,
        payee_id=request.payee_id,
        amount=request.amount if fits_numeric(request.amount) else None,
        status=Status.REJECTED,
        reason=reason,
        payer_balance=None,
        attempts=attempt,
        transaction_ms=None,
        enqueued_at=enqueued_at,
        completed_at=datetime.now(UTC),
    )
    conn.execute(BEGIN)
    earlier = conn.execute(SELECT_RESULT, {"transfer_id": request.transfer_id})
    inserted = conn.execute(INSERT_REJECTION, _row_params(result))
    conn.execute(COMMIT)
    return _PendingRejection(result, earlier, inserted)


def _row_params(result: TransferResult) -> dict[str, Any]:
    return {
        "transfer_id": result.transfer_id,
        "payer_id": result.payer_id,
        "payee_id": result.payee_id,
        "amount": result.amount,
        "status": result.status.value,
        "reason": result.reason.value if result.reason else None,
        "payer_balance": result.payer_balance,
        "attempts": result.attempts,
        "transaction_ms": result.transaction_ms,
        "enqueued_at": result.enqueued_at,
        "completed_at": result.completed_at,
    }


def result_from_row(row: tuple[Any, ...]) -> TransferResult:
    """A :class:`TransferResult` from a row selected with :data:`RESULT_COLUMNS`."""
    (transfer_id, payer_id, payee_id, amount, status, reason,
     payer_balance, attempts, transaction_ms, enqueued_at, completed_at) = row  # fmt: skip
    return TransferResult(
        transfer_id=transfer_id,
        payer_id=payer_id,
        payee_id=payee_id,
        amount=amount,
        status=Status(status),
        reason=Reason(reason) if reason else None,
        payer_balance=payer_balance,
        attempts=attempts,
        transaction_ms=transaction_ms,
        enqueued_at=enqueued_at,
        completed_at=completed_at,
    )


def _repeat(request: TransferRequest, row: tuple[Any, ...], attempt: int) -> TransferResult:
    """The first recorded result, or ``conflicting_duplicate`` if the content differs."""
    first = result_from_row(row)
    if _same_content(first, request):
        return first.as_duplicate()
    return TransferResult(
        transfer_id=request.transfer_id,
        payer_id=request.payer_id,
        payee_id=request.payee_id,
        amount=request.amount if fits_numeric(request.amount) else None,
        status=Status.REJECTED,
        reason=Reason.CONFLICTING_DUPLICATE,
        payer_balance=None,
        attempts=attempt,
        transaction_ms=None,
        enqueued_at=None,
        completed_at=datetime.now(UTC),
        duplicate=True,
    )


def _same_content(first: TransferResult, request: TransferRequest) -> bool:
    if (first.payer_id, first.payee_id) != (request.payer_id, request.payee_id):
        return False
    if first.amount is None:
        # Recorded as an unrepresentable invalid_amount; any unrepresentable amount
        # under the same id is the same (rejected) request.
        return not fits_numeric(request.amount)
    return first.amount == request.amount and fits_numeric(request.amount)
