"""The results table as its readers and its one writer see it: columns and row mapping.

The engine writes a row per transfer_id; the producer's commands, the client, the
explain command and the history query read them. The column list, the row <->
:class:`~worker.outcomes.TransferResult` mapping and the history query live here, once,
so that readers never import the engine that writes.
"""

from __future__ import annotations

from typing import Any, LiteralString

from worker.outcomes import Reason, Status, TransferResult

RESULT_COLUMNS: LiteralString = (
    "transfer_id, payer_id, payee_id, amount, status, reason, payer_balance,"
    " attempts, transaction_ms, enqueued_at, completed_at"
)
"""The columns of ``transfer_results``, in the order rows are read and written."""

HISTORY: LiteralString = (
    # Each branch is a backward scan of one history index, (payer_id, completed_at)
    # or (payee_id, completed_at), stopping after %(limit)s rows; the outer query merges
    # at most 2 x limit rows. An OR over both columns would scan instead.
    "(SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE payer_id = %(account_id)s"
    " ORDER BY completed_at DESC LIMIT %(limit)s)"
    " UNION ALL"
    # A same_account rejection names the account on both sides: list it once.
    " (SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE payee_id = %(account_id)s AND payer_id <> %(account_id)s"
    " ORDER BY completed_at DESC LIMIT %(limit)s)"
    " ORDER BY completed_at DESC, transfer_id LIMIT %(limit)s"
)
"""The latest ``%(limit)s`` results paid by or to ``%(account_id)s``, newest first."""


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


def row_params(result: TransferResult) -> dict[str, Any]:
    """The named parameters that write ``result`` as a row (see :data:`RESULT_COLUMNS`)."""
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
