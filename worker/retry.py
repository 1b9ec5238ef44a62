"""When to retry a failed database attempt, and how long to wait first.

Mirrors httpx's ``map_exceptions``: psycopg's many error classes are sorted into the
two transient kinds the engine treats differently, and everything else is a bug or a
permanent problem that propagates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout

from worker.settings import Settings

_JITTER = random.Random()
"""Our own generator: jitter must not depend on (or disturb) the global random state."""


class Fault(Enum):
    """A transient failure: nothing was applied, the same transfer may run again."""

    CONFLICT = "conflict"
    """OCC conflict (40001, or DSQL's OC000/OC001 in its message or as the SQLSTATE),
    deadlock (40P01), a lock wait past
    lock_timeout (55P03, PostgreSQL only), or a concurrent insert of the same
    transfer_id (23505 on the results key)."""
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
        # psycopg refused to use a connection it already knows is broken.
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts, a wall-clock budget, and exponential backoff with full jitter.

    Full jitter (sleep uniformly in ``[0, min(cap, base * 2**n)]``) spreads retries of
    transactions that conflicted with each other, so they do not collide again.
    """

    max_attempts: int = 30
    budget_s: float = 15.0
    base_s: float = 0.002
    cap_s: float = 0.2

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
