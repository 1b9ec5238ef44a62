"""The processor's exception tree, and the one classifier of database errors.

Like httpx's ``_exceptions.py``: every error the processor raises on purpose is a
:class:`TransferError`, and lower-layer errors (psycopg, pydantic) are mapped onto
the few kinds a caller decides on:

- :class:`RetryableTransferError` (conflicts or connection faults outlasted the retry
  policy): nothing was applied; the message comes back on the redelivery schedule.
- :class:`MalformedRequest`: the request can never be processed; dead-letter it.
- :class:`ConfigurationError`: the environment is wrong; exit 2, say which setting.
- :class:`OperationFailed`: a command could not do its job; exit 1, say why.

:func:`classify` sorts psycopg's errors into the two transient kinds the engine
retries (:class:`Fault`); everything else is a bug or a permanent problem.
Business rejections are not exceptions: they are
:class:`worker.outcomes.TransferResult` values with ``status=rejected``.
"""

from __future__ import annotations

from enum import Enum

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout
from pydantic import ValidationError


class TransferError(Exception):
    """Root of every error the processor raises on purpose."""


# --- a transfer ----------------------------------------------------------------------


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
    attempt limit or the time budget, or the database is known to be unreachable."""


class MalformedRequest(TransferError):
    """The request does not match the message contract; retrying cannot fix it."""


# --- configuration and commands --------------------------------------------------------


class ConfigurationError(TransferError, ValueError):
    """A setting, or the combination of settings, cannot work (exit status 2)."""


class NotConfigured(ConfigurationError):
    """Neither DATABASE_URL nor DSQL_ENDPOINT is set."""


class QueueNotConfigured(ConfigurationError):
    """No queue (neither QUEUE_URL nor QUEUE_NAME) or no AWS region is configured."""


class InvalidName(ConfigurationError):
    """A role, schema or ARN that may not be written into a statement."""


class ScheduleTooLong(ConfigurationError):
    """The redelivery horizon needs more receives than a redrive policy allows."""


class OperationFailed(TransferError, RuntimeError):
    """A command could not do its job (exit status 1); the message says why."""


class MigrationFailed(OperationFailed):
    """The schema could not be completed; the message says which object and why."""


class NotEnoughAccounts(OperationFailed):
    """``explain`` needs two existing accounts; run ``producer setup`` first."""


def describe_validation(
    exc: ValidationError, *, env_names: bool = False, whole: str = "body"
) -> str:
    """A pydantic error as one line: ``field: problem; ...`` (no input is echoed).

    ``env_names`` upper-cases the field path, as the settings' environment variables;
    ``whole`` names an error about the whole object (a cross-field check).
    """
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        where = where.upper() if env_names else where
        parts.append(f"{where or whole}: {error['msg']}")
    return "; ".join(parts)


def one_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's span several; a log line or a report
    row should not)."""
    return " ".join(str(exc).split())


# --- database errors, classified -----------------------------------------------------


class Fault(Enum):
    """A transient failure: nothing was applied, the same transfer may run again."""

    CONFLICT = "conflict"
    """OCC conflict (40001, or DSQL's OC000/OC001 in its message or as the SQLSTATE),
    deadlock (40P01), a lock wait past lock_timeout (55P03, PostgreSQL only), or a
    concurrent insert of the same transfer_id (23505 on the results key)."""
    CONNECTION = "connection"
    """The connection broke, the server restarted or refused us: retry on a new one."""


# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
# 53300 too_many_connections, 53400 DSQL's connection-rate limit.
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "53400"})
# 55P03 lock_not_available: PostgreSQL's lock_timeout (see worker.db), never on DSQL.
# OC000/OC001: DSQL reports its conflicts as 40001 with the code in the message, but
# AWS's connectors also accept the code as the SQLSTATE itself, and so do we.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "OC000", "OC001"})


def classify(exc: BaseException) -> Fault | None:
    """The kind of transient fault ``exc`` is, or None when retrying cannot help."""
    if isinstance(exc, PoolTimeout):
        return Fault.CONNECTION
    if isinstance(exc, PoolClosed):
        return None  # we are shutting down: retrying would only delay the exit
    if not isinstance(exc, psycopg.Error):
        return None
    sqlstate = exc.sqlstate
    if sqlstate in _CONFLICT_SQLSTATES:
        return Fault.CONFLICT
    if isinstance(exc, pg_errors.UniqueViolation) and _on_results_key(exc):
        return Fault.CONFLICT
    if sqlstate is None:
        # No server error code: the socket closed, the server vanished mid-query, or
        # psycopg refused to use a connection it already knows is broken. (Login
        # failures, DSQL's 53300/53400 at connect included, also arrive this way.)
        return (
            Fault.CONNECTION
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            else None
        )
    if sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES:
        return Fault.CONNECTION
    return None


def _on_results_key(exc: pg_errors.UniqueViolation) -> bool:
    # Another delivery of the same transfer_id committed first; the next attempt
    # reads its result. Any other unique violation is a real bug and propagates.
    return exc.diag.table_name in (None, "transfer_results")
