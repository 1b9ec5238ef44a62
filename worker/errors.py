"""The processor's exception tree.

Lower-layer errors (psycopg, botocore, pydantic) are mapped onto these few classes so
that callers decide with one ``except`` what to do with a message:

- :class:`RetryableTransferError` and its subclasses: nothing was applied; leave the
  message for redelivery.
- :class:`MalformedRequest`: the request can never be processed; dead-letter it.

Business rejections are not exceptions: they are :class:`worker.outcomes.TransferResult`
values with ``status=rejected``.
"""

from __future__ import annotations


class TransferError(Exception):
    """Root of every error the processor raises on purpose."""


class RetryableTransferError(TransferError):
    """Transient failure: the transfer was not applied and may be retried later."""

    def __init__(self, message: str, *, attempts: int, elapsed_s: float) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed_s = elapsed_s


class ConflictRetriesExhausted(RetryableTransferError):
    """Optimistic-concurrency conflicts (40001 / OC000 / OC001 / 40P01) used up the
    attempt limit or the time budget."""


class DatabaseUnavailable(RetryableTransferError):
    """Connection faults (class 08, 57P01, a closed connection, pool timeout) used up the
    attempt limit or the time budget."""


class MalformedRequest(TransferError):
    """The request does not match the message contract; retrying cannot fix it."""
