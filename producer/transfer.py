"""A transfer as a producer hands it over, the contract's check of it, and what sending
it can report.

:class:`Transfer` is what a caller gives :class:`~producer.client.TransferClient`;
:func:`to_request` turns it into the contract's
:class:`~worker.contract.TransferRequest` with the worker's own parser, so that
nothing a worker would dead-letter is ever sent (:class:`InvalidTransfer` instead).
:class:`SendResult` and :class:`TransferNotSent` say what SQS took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID, uuid4

from worker.contract import TransferRequest, encode_body, parse_body
from worker.errors import MalformedRequest

MAX_EXPONENT = 100
"""Amounts beyond 10^100 (or below 10^-100) are refused before they are written out."""


class InvalidTransfer(ValueError):
    """The transfer is not one the contract accepts (the worker would dead-letter it).

    ``report`` says what :meth:`~producer.client.TransferClient.send_many` had sent
    before it met this transfer (None from
    :meth:`~producer.client.TransferClient.send`, which sent nothing).
    """

    def __init__(self, message: str, report: SendResult | None = None) -> None:
        super().__init__(message)
        self.report = report


class TransferNotSent(RuntimeError):
    """SQS refused the message (``code`` is its error code, e.g. after the retries)."""

    def __init__(self, transfer_id: UUID, code: str) -> None:
        super().__init__(f"SQS did not take transfer {transfer_id}: {code}")
        self.transfer_id = transfer_id
        self.code = code


@dataclass(frozen=True)
class Transfer:
    """A transfer to send; ``transfer_id`` None means "make one up"."""

    payer: int
    payee: int
    amount: Decimal | int | str
    transfer_id: UUID | None = None


@dataclass
class SendResult:
    """What :meth:`~producer.client.TransferClient.send_many` did with the transfers it
    was given."""

    sent: list[UUID] = field(default_factory=list)
    """Ids SQS accepted, in the order their batches were answered."""
    not_sent: dict[UUID, str] = field(default_factory=dict)
    """Ids SQS still refused after the retries (or at once, for the sender's fault),
    with its error code. They will have no outcome."""

    @property
    def requested(self) -> int:
        """How many transfers were handed to the client."""
        return len(self.sent) + len(self.not_sent)


def to_request(transfer: Transfer | TransferRequest) -> TransferRequest:
    """The contract's :class:`~worker.contract.TransferRequest` for ``transfer``, with a
    new uuid4 when it has no id; raises :class:`InvalidTransfer` for what the worker
    would dead-letter (the check is the worker's own parser on the encoded body)."""
    if isinstance(transfer, TransferRequest):
        return transfer
    transfer_id = transfer.transfer_id or uuid4()
    try:
        amount = Decimal(transfer.amount)
        if not amount.is_finite() or abs(amount.adjusted()) > MAX_EXPONENT:
            # encode_body writes the amount out in full: 1E+999999999999 would not fit
            # in memory, and no such amount could ever be applied.
            raise InvalidTransfer(f"not a valid transfer: amount {transfer.amount} out of range")
        body = encode_body(transfer.payer, transfer.payee, amount, transfer_id)
        return parse_body(body, "")
    except InvalidTransfer:
        raise
    except (MalformedRequest, ArithmeticError, ValueError, TypeError) as exc:
        raise InvalidTransfer(f"not a valid transfer: {exc}") from None
