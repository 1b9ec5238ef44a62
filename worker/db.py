"""Database connections: a pooled, IAM-authenticated DSQL connection or plain PostgreSQL.

On DSQL the password is a short-lived IAM token. A token is only checked when a
connection opens, so the pool asks the official connector's connection class for a
fresh token on every *new* connection (``admin`` -> DbConnectAdmin, any other role ->
DbConnect) and retires connections before DSQL's 60-minute cap (``max_lifetime``,
which psycopg_pool jitters by -5% so a pool does not reconnect all at once).

Broken connections are not checked on checkout (that would cost a round trip per
transfer): psycopg_pool discards a connection returned in a broken state, and the
engine retries a connection fault on a fresh one after :func:`purge_broken`.

Secrets: the DATABASE_URL is a ``SecretStr`` and tokens live only inside libpq's
connection parameters. libpq and psycopg never echo a password in their errors, and
nothing here logs connection parameters.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg_pool import ConnectionPool

from worker.settings import Backend, Settings

APPLICATION_NAME = "dsql-transfers"
LOCK_TIMEOUT_S = 2.0
"""PostgreSQL only: the longest one attempt waits for a row lock."""


class NotConfigured(RuntimeError):
    """Neither DATABASE_URL nor DSQL_ENDPOINT is set."""


def _configure(conn: psycopg.Connection[Any]) -> None:
    # DSQL only offers snapshot isolation; asking for it explicitly makes PostgreSQL
    # behave the same way (REPEATABLE READ), so tests see the same anomalies. Pooled
    # connections are in autocommit mode and their users write
    # "BEGIN ISOLATION LEVEL REPEATABLE READ" themselves (see worker.engine).
    conn.isolation_level = IsolationLevel.REPEATABLE_READ


def _dsql_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "user": settings.dsql_user,
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": settings.dsql_sslrootcert,
        "connect_timeout": settings.connect_timeout_s,
        "application_name": APPLICATION_NAME,
    }
    if settings.aws_region:
        kwargs["region"] = settings.aws_region
    return kwargs


def _postgres_conninfo(settings: Settings) -> str:
    if settings.database_url is None:
        raise NotConfigured("set DATABASE_URL (PostgreSQL) or DSQL_ENDPOINT (Aurora DSQL)")
    return settings.database_url.get_secret_value()


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """One unpooled connection, for migrations and command-line tools."""
    conn: psycopg.Connection[Any]
    if settings.backend is Backend.DSQL:
        from aurora_dsql_psycopg import DSQLConnection

        conn = DSQLConnection.connect(
            settings.dsql_endpoint, autocommit=autocommit, **_dsql_kwargs(settings)
        )
    else:
        conn = psycopg.connect(
            _postgres_conninfo(settings),
            autocommit=autocommit,
            connect_timeout=settings.connect_timeout_s,
            application_name=APPLICATION_NAME,
        )
    _configure(conn)
    return conn


def create_pool(
    settings: Settings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    name: str = "transfers",
) -> ConnectionPool[psycopg.Connection[Any]]:
    """An unopened pool of autocommit connections; ``open(wait=True)`` or ``with`` it.

    Autocommit, because psycopg would otherwise send its implicit BEGIN in a round
    trip of its own; the engine puts BEGIN and COMMIT in its pipeline batches instead.
    """
    common: dict[str, Any] = {
        "min_size": settings.pool_min_size if min_size is None else min_size,
        "max_size": settings.pool_max_size if max_size is None else max_size,
        "max_lifetime": settings.pool_max_lifetime_s,
        "max_idle": settings.pool_max_idle_s,
        "timeout": settings.pool_timeout_s,
        "configure": _configure,
        "name": name,
        "open": False,
    }
    if settings.backend is Backend.DSQL:
        from aurora_dsql_psycopg import create_pool as create_dsql_pool

        # The connector's connection class generates a new IAM token in connect().
        pool: ConnectionPool[psycopg.Connection[Any]] = create_dsql_pool(
            settings.dsql_endpoint, kwargs={**_dsql_kwargs(settings), "autocommit": True}, **common
        )
        return pool
    return ConnectionPool(
        _postgres_conninfo(settings),
        kwargs={
            "connect_timeout": settings.connect_timeout_s,
            "application_name": APPLICATION_NAME,
            "autocommit": True,
            # PostgreSQL blocks on row locks where DSQL would fail at COMMIT; without
            # a bound, one held lock could outlast the retry budget and the message's
            # visibility. 55P03 is then retried like a conflict, within the budget.
            "options": f"-c lock_timeout={_lock_timeout_ms(settings)}",
        },
        **common,
    )


def _lock_timeout_ms(settings: Settings) -> int:
    # Transfers hold a row for a millisecond or two; a wait of seconds means a stuck
    # session, and the attempt is better retried (with backoff) than kept waiting.
    return int(min(settings.retry_budget_s, LOCK_TIMEOUT_S) * 1000)


def purge_broken(pool: ConnectionPool[Any]) -> None:
    """Replace idle connections that died (server restart, backend terminated).

    Called only after a connection fault, so the retry does not draw another corpse
    from the pool; it costs one round trip per idle connection.
    """
    pool.check()
