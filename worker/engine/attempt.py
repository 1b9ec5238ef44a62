"""One attempt of a transfer: one round trip, the outcome read from its answer.

:func:`single` sends :data:`~worker.engine.sql.TRANSFER` on its own (an implicit
transaction); :func:`pipelined` sends :data:`~worker.engine.sql.PIPELINED` in one
pipeline batch. Either way the database decides (on the transaction's snapshot),
records the outcome and moves the money in the same transaction, so a transfer and
its outcome commit together or not at all: idempotent by ``transfer_id`` without an
in-progress marker that a crashed worker could leave behind.

An attempt returns the outcome or raises: a psycopg error for the retry loop
(:mod:`worker.engine.retry`) to classify, or :class:`Raced` when neither an earlier
result nor our own row came back (another delivery's insert won; read it next time).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from worker.contract import AMOUNT_LIMIT, TransferRequest, fits_numeric
from worker.engine.sql import BEGIN, COMMIT, MOVE, RECORD, SELECT_RESULT, TRANSFER, TRANSFERS
from worker.outcomes import Reason, Status, TransferResult
from worker.results import result_from_row

Connection = psycopg.Connection[Any]
Attempt = Callable[[Connection, int], TransferResult]
"""One attempt: ``(connection, attempt number) -> outcome``."""

_EARLIER = slice(0, 11)
"""TRANSFER's answer: the earlier result's columns come first (all NULL if none)..."""
_RECORDED = slice(11, 15)
"""...then what this statement recorded (status, reason, payer_balance, transaction_ms)."""


class Raced(Exception):
    """The result row appeared between our snapshot and our insert; read it next time."""


def params(
    request: TransferRequest,
    reason: Reason | None,
    enqueued_at: datetime | None,
    attempt: int,
) -> dict[str, Any]:
    """The named parameters of both variants' statements for this attempt."""
    representable = fits_numeric(request.amount)
    return {
        "transfer_id": request.transfer_id,
        "payer_id": request.payer_id,
        "payee_id": request.payee_id,
        # A reason decided here needs no amount arithmetic; an unrepresentable
        # invalid amount is recorded as NULL.
        "amount": request.amount if reason is None else None,
        "recorded_amount": request.amount if representable else None,
        "amount_limit": AMOUNT_LIMIT,
        "reason": reason.value if reason else None,
        "attempts": attempt,
        "enqueued_at": enqueued_at,
        "completed_at": datetime.now(UTC),
    }


def single(
    request: TransferRequest,
    reason: Reason | None,
    enqueued_at: datetime | None,
    conn: Connection,
    attempt: int,
) -> TransferResult:
    """The whole transfer as one statement in one round trip."""
    values = params(request, reason, enqueued_at, attempt)
    row = conn.execute(TRANSFER, values).fetchone()
    assert row is not None  # the statement always answers one row
    if row[0] is not None:
        return repeat(request, row[_EARLIER], attempt)
    return _recorded(request, values, row[_RECORDED], attempt)


def batch(
    items: Sequence[tuple[TransferRequest, Reason | None, datetime | None]], conn: Connection
) -> list[TransferResult | None]:
    """k transfers on pairwise disjoint accounts, with distinct ids, as one statement
    (one round trip, one commit): their outcomes in order. All or nothing: an error
    leaves every one unapplied. None for a transfer whose result row another delivery
    inserted after our snapshot (:class:`Raced`): the others are committed, that one
    must be read again on its own."""
    if len({request.transfer_id for request, _, _ in items}) != len(items):
        # Two rows for one id would both join the one recorded row and move twice.
        raise ValueError("a batch must not hold one transfer_id twice")
    rows = [params(request, reason, enqueued_at, 1) for request, reason, enqueued_at in items]
    arrays: dict[str, Any] = {name: [row[name] for row in rows] for name in _BATCHED}
    arrays.update(
        ordinal=list(range(len(rows))),
        amount_limit=AMOUNT_LIMIT,
        completed_at=rows[0]["completed_at"],
    )
    answers = conn.execute(TRANSFERS, arrays).fetchall()
    results: list[TransferResult | None] = []
    for (request, _, _), row, sent in zip(items, answers, rows, strict=True):
        if row[_BATCH_EARLIER][0] is not None:
            results.append(repeat(request, row[_BATCH_EARLIER], 1))
            continue
        try:
            results.append(_recorded(request, sent, row[_BATCH_RECORDED], 1))
        except Raced:
            results.append(None)
    return results


_BATCHED = ("transfer_id", "payer_id", "payee_id", "amount", "recorded_amount", "reason",
            "enqueued_at")  # fmt: skip
"""The per-transfer parameters TRANSFERS takes as arrays, one element per transfer."""
_BATCH_EARLIER = slice(1, 12)
"""TRANSFERS' answer: the row's ordinal, then the earlier result's columns..."""
_BATCH_RECORDED = slice(12, 16)
"""...then what the statement recorded for it, as TRANSFER's row."""


def pipelined(
    request: TransferRequest,
    reason: Reason | None,
    enqueued_at: datetime | None,
    conn: Connection,
    attempt: int,
) -> TransferResult:
    """The transfer as documented statements, all sent with one pipeline sync."""
    values = {**params(request, reason, enqueued_at, attempt), "attempt_id": uuid.uuid4()}
    with _pipeline(conn):
        conn.execute(BEGIN)
        earlier = conn.execute(SELECT_RESULT, values)
        recorded = conn.execute(RECORD, values)
        conn.execute(MOVE, values)
        conn.execute(COMMIT)
    row = earlier.fetchone()
    if row is not None:
        return repeat(request, row, attempt)
    return _recorded(request, values, recorded.fetchone(), attempt)


def _recorded(
    request: TransferRequest,
    values: dict[str, Any],
    recorded: tuple[Any, ...] | None,
    attempt: int,
) -> TransferResult:
    """The outcome this attempt wrote, from what its insert returned."""
    if recorded is None or recorded[0] is None:
        raise Raced
    status, reason, payer_balance, transaction_ms = recorded
    return outcome(
        request,
        Status(status),
        attempt=attempt,
        reason=Reason(reason) if reason else None,
        payer_balance=payer_balance,
        transaction_ms=transaction_ms,
        enqueued_at=values["enqueued_at"],
        completed_at=values["completed_at"],
    )


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


def outcome(
    request: TransferRequest,
    status: Status,
    *,
    attempt: int,
    reason: Reason | None = None,
    payer_balance: Decimal | None = None,
    transaction_ms: float | None = None,
    enqueued_at: datetime | None = None,
    completed_at: datetime | None = None,
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
        completed_at=completed_at or datetime.now(UTC),
        duplicate=duplicate,
    )


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
