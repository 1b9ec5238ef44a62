"""The outcome codes: the one list of what can happen to a transfer request.

Stored in ``transfer_results.status`` / ``.reason``, printed by the producer, counted in
metrics and matched by tests. Add a reason here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID


class Status(StrEnum):
    """Final state of a transfer request."""

    COMMITTED = "committed"
    REJECTED = "rejected"


class Reason(StrEnum):
    """Why a transfer was rejected. Every rejection is final: retrying cannot change it."""

    INSUFFICIENT_FUNDS = "insufficient_funds"
    PAYER_NOT_FOUND = "payer_not_found"
    PAYEE_NOT_FOUND = "payee_not_found"
    SAME_ACCOUNT = "same_account"
    INVALID_AMOUNT = "invalid_amount"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    BALANCE_OVERFLOW = "balance_overflow"
    """The credit would push the payee past numeric(18,6); not in the workshop, but a
    ledger must refuse it rather than fail forever."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    """One row of ``transfer_results`` as the engine reports it back.

    ``duplicate`` is not stored: it tells the caller that this result was recorded by an
    earlier delivery of the same ``transfer_id`` (or, for ``conflicting_duplicate``, that
    the request clashed with one), so the message can be acknowledged without effect.
    ``amount`` is ``None`` only for an ``invalid_amount`` rejection whose amount cannot be
    represented as numeric(18,6).
    """

    transfer_id: UUID
    payer_id: int
    payee_id: int
    amount: Decimal | None
    status: Status
    reason: Reason | None
    payer_balance: Decimal | None
    attempts: int
    transaction_ms: float | None
    enqueued_at: datetime | None
    completed_at: datetime
    duplicate: bool = False

    @property
    def committed(self) -> bool:
        """True when the money moved (now or in the delivery that recorded it)."""
        return self.status is Status.COMMITTED

    def as_duplicate(self) -> TransferResult:
        """The same recorded result, flagged as a repeat delivery."""
        return replace(self, duplicate=True)
