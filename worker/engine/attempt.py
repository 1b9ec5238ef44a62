"""One attempt of a transfer: two round trips, both in psycopg pipeline mode.

1. ``BEGIN`` + read any earlier result for this ``transfer_id`` + the two balance
   updates (:mod:`worker.engine.sql`), then one sync.
2. Insert the result row + ``COMMIT``, then one sync.

The balance checks happen in Python between the two, on the rows the updates
returned: payer missing, payee missing, or the payer's balance gone negative all roll
back and record a rejection instead. The result row is written in the same transaction
as the money movement, so a transfer and its outcome commit together or not at all;
that makes the whole thing idempotent by ``transfer_id`` without an in-progress
marker that a crashed worker could leave behind.

An attempt either returns the outcome or raises: a psycopg error for the retry loop
(:mod:`worker.engine.retry`) to classify, or :class:`Raced` when another delivery's
result row appeared between our snapshot and our insert (read it next time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from worker.contract import TransferRequest, fits_numeric
from worker.engine.sql import (
    BEGIN,
    COMMIT,
    CREDIT,
    DEBIT,
    INSERT_REJECTION,
    INSERT_RESULT,
    ROLLBACK,
    SELECT_RESULT,
)
from worker.outcomes import Reason, Status, TransferResult
from worker.results import result_from_row, row_params

Connection = psycopg.Connection[Any]
Attempt = Callable[[Connection, int], TransferResult]
"""One attempt: ``(connection, attempt number) -> outcome``."""


class Raced(Exception):
    """The result row appeared between our snapshot and our insert; read it next time."""


def outcome(
    request: TransferRequest,
    status: Status,
    *,
    attempt: int,
    reason: Reason | None = None,
    payer_balance: Decimal | None = None,
    transaction_ms: float | None = None,
    enqueued_at: datetime | None = None,
    duplicate: bool = False,
) -> TransferResult:
    """The result of ``request`` as this attempt decided it (the one place it is built)."""
    return TransferResult(
        transfer_id=request.transfer_id,
        payer_id=request.payer_id,
        payee_id=request.payee_id,
        # An unrepresentable invalid amount is recorded as NULL.
        amount=request.amount if fits_numeric(request.amount) else None,
        status=status,
        reason=reason,
        payer_balance=payer_balance,
        attempts=attempt,
        transaction_ms=transaction_ms,
        enqueued_at=enqueued_at,
        completed_at=datetime.now(UTC),
        duplicate=duplicate,
    )


def transfer(
    request: TransferRequest, enqueued_at: datetime | None, conn: Connection, attempt: int
) -> TransferResult:
    """Move the money and record the outcome, or record why not (two round trips)."""
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
            decided = _decide(request, earlier, debit, credit, attempt=attempt,
                              started=started, enqueued_at=enqueued_at)  # fmt: skip
            # Round trip 2: what is queued now goes out with the sync on leaving.
            pending = _queue_finish(conn, request, decided, enqueued_at, attempt)
    except pg_errors.NumericValueOutOfRange:
        # The credit would overflow numeric(18,6): rare enough to pay a round trip.
        conn.execute(ROLLBACK)
        return record_only(request, Reason.BALANCE_OVERFLOW, enqueued_at, conn, attempt)
    if pending is not None:
        return pending.outcome(request, attempt)
    assert isinstance(decided, TransferResult)  # a Reason always leaves a pending record
    return decided


def record_only(
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
    decided: TransferResult | Reason,
    enqueued_at: datetime | None,
    attempt: int,
) -> _PendingRejection | None:
    """Queue COMMIT with the result row, or ROLLBACK (plus the rejection's record)."""
    if isinstance(decided, Reason):
        conn.execute(ROLLBACK)
        return _queue_rejection(conn, request, decided, enqueued_at, attempt)
    if decided.duplicate:
        conn.execute(ROLLBACK)
    else:
        conn.execute(INSERT_RESULT, row_params(decided))
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
        return repeat(request, row, attempt)
    payer, payee = debit.fetchone(), credit.fetchone()
    if payer is None:
        return Reason.PAYER_NOT_FOUND
    if payee is None:
        return Reason.PAYEE_NOT_FOUND
    if payer[0] < 0:
        return Reason.INSUFFICIENT_FUNDS
    return outcome(
        request,
        Status.COMMITTED,
        attempt=attempt,
        payer_balance=payer[0],
        transaction_ms=(time.perf_counter() - started) * 1000,
        enqueued_at=enqueued_at,
    )


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
            raise Raced
        return repeat(request, row, attempt)


def _queue_rejection(
    conn: Connection,
    request: TransferRequest,
    reason: Reason,
    enqueued_at: datetime | None,
    attempt: int,
) -> _PendingRejection:
    """Queue the recording of a rejection unless the transfer_id already has a result
    (first writer wins: ON CONFLICT DO NOTHING, and the earlier row is read back)."""
    result = outcome(
        request, Status.REJECTED, attempt=attempt, reason=reason, enqueued_at=enqueued_at
    )
    conn.execute(BEGIN)
    earlier = conn.execute(SELECT_RESULT, {"transfer_id": request.transfer_id})
    inserted = conn.execute(INSERT_REJECTION, row_params(result))
    conn.execute(COMMIT)
    return _PendingRejection(result, earlier, inserted)


def repeat(request: TransferRequest, row: tuple[Any, ...], attempt: int) -> TransferResult:
    """The first recorded result, or ``conflicting_duplicate`` if the content differs."""
    first = result_from_row(row)
    if _same_content(first, request):
        return first.as_duplicate()
    return outcome(
        request,
        Status.REJECTED,
        attempt=attempt,
        reason=Reason.CONFLICTING_DUPLICATE,
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
