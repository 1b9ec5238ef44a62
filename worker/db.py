"""Database connections: a pooled, IAM-authenticated DSQL connection or plain PostgreSQL.

On DSQL the password is a short-lived IAM token. A token is only checked when a
connection opens, so the pool asks the official connector's connection class for a
fresh token on every *new* connection (``admin`` -> DbConnectAdmin, any other role ->
DbConnect) and retires connections before DSQL's 60-minute cap (``max_lifetime``,
which psycopg_pool jitters by -5% so a pool does not reconnect all at once).

Broken connections are not checked on checkout (that would cost a round trip per
transfer): psycopg_pool discards a connection returned in a broken state, and the
engine retries a connection fault on a fresh one after :func:`purge_broken`.

TLS to DSQL is ``verify-full`` against the Amazon Trust Services roots shipped in this
package (:data:`BUNDLED_CA`). psycopg-binary carries its own OpenSSL, whose "system"
store is a directory compiled into the wheel that ``python:3.12-slim`` and the Lambda
runtime do not have: with ``sslrootcert=system`` and no ``SSL_CERT_FILE`` it trusts
nothing and every connection fails. A file inside the package works everywhere the
package is installed. ``DSQL_SSLROOTCERT`` overrides it with a path or ``system``.

Prepared statements: psycopg prepares any statement run ``prepare_threshold`` (5)
times, BEGIN and COMMIT included, and after a ROLLBACK it queues ``DEALLOCATE ALL``
into the next transaction. DSQL documents neither named prepared statements' lifetime
across that nor ``DEALLOCATE ALL`` inside a transaction, so DSQL connections never
prepare (``prepare_threshold=None``: every statement is an unnamed Parse/Bind/Execute,
which any PostgreSQL-protocol server must accept). PostgreSQL keeps psycopg's default;
``docs/dsql-statements.md`` has the measured cost.

Secrets: the DATABASE_URL is a ``SecretStr`` and tokens live only inside libpq's
connection parameters. libpq and psycopg never echo a password in their errors, and
nothing here logs connection parameters.
"""

from __future__ import annotations

from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg_pool import ConnectionPool

from worker.errors import NotConfigured
from worker.settings import Backend, Settings

APPLICATION_NAME = "dsql-transfers"
LOCK_TIMEOUT_S = 2.0
"""PostgreSQL only: the longest one attempt waits for a row lock."""
BUNDLED_CA = Path(__file__).resolve().parent / "certs" / "amazon-trust-services.pem"
"""Amazon Root CA 1-4 and Starfield Services Root G2, DSQL's trust anchors."""
SYSTEM_CA = "system"


class TransferPool(ConnectionPool[psycopg.Connection[Any]]):
    """psycopg_pool's pool, checking connections with ``SELECT 1``.

    psycopg_pool's own check sends an empty query string; an explicit statement is one
    every server is documented to answer (DSQL included), and costs the same round trip.
    """

    @staticmethod
    def check_connection(conn: psycopg.Connection[Any]) -> None:
        """Raise if ``conn`` cannot run a trivial query (used by :meth:`check`)."""
        if conn.autocommit:
            conn.execute("SELECT 1")
            return
        conn.autocommit = True
        try:
            conn.execute("SELECT 1")
        finally:
            with suppress(psycopg.Error):  # a closed connection: keep the first error
                conn.autocommit = False


def _configure(backend: Backend, conn: psycopg.Connection[Any]) -> None:
    # DSQL only offers snapshot isolation; asking for it explicitly makes PostgreSQL
    # behave the same way (REPEATABLE READ), so tests see the same anomalies. Pooled
    # connections are in autocommit mode: the engine's implicit transactions get it
    # from default_transaction_isolation (see _options), its explicit ones ask for it.
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    if backend is Backend.DSQL:
        conn.prepare_threshold = None  # see the module docstring


def ssl_root_cert(settings: Settings) -> str:
    """The ``sslrootcert`` for DSQL: DSQL_SSLROOTCERT, or the bundled Amazon roots."""
    return settings.dsql_sslrootcert or str(BUNDLED_CA)


def _options(settings: Settings, *, pooled: bool) -> dict[str, Any]:
    """libpq's startup ``options``: the schema, and PostgreSQL's lock timeout."""
    options = []
    if settings.db_schema != "public":
        # A startup parameter rather than a SET: it costs no round trip, and DSQL
        # accepts it at connect (its own lint suite connects this way).
        options.append(f"-c search_path={settings.db_schema}")
    if pooled:
        options.append(f"-c lock_timeout={_lock_timeout_ms(settings)}")
        # The engine's one-statement transfer runs as an implicit transaction and
        # decides on its snapshot: it needs DSQL's snapshot isolation here too.
        options.append(r"-c default_transaction_isolation=repeatable\ read")
    return {"options": " ".join(options)} if options else {}


def _dsql_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "user": settings.dsql_user,
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": ssl_root_cert(settings),
        "connect_timeout": settings.connect_timeout_s,
        "application_name": APPLICATION_NAME,
        **_options(settings, pooled=False),
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
            **_options(settings, pooled=False),
        )
    _configure(settings.backend, conn)
    return conn


def create_pool(
    settings: Settings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    name: str = "transfers",
) -> TransferPool:
    """An unopened pool of autocommit connections; ``open(wait=True)`` or ``with`` it.

    Autocommit: the engine's one-statement transfer is its own implicit transaction,
    and its pipelined variant puts BEGIN and COMMIT in the pipeline batch (psycopg's
    implicit BEGIN would cost a round trip of its own).
    """
    common: dict[str, Any] = {
        "min_size": settings.pool_min_size if min_size is None else min_size,
        "max_size": settings.pool_max_size if max_size is None else max_size,
        "max_lifetime": settings.pool_max_lifetime_s,
        "max_idle": settings.pool_max_idle_s,
        "timeout": settings.pool_timeout_s,
        "configure": partial(_configure, settings.backend),
        "name": name,
        "open": False,
    }
    if settings.backend is Backend.DSQL:
        from aurora_dsql_psycopg import DSQLConnection

        # The connector's connection class generates a new IAM token in connect().
        return TransferPool(
            settings.dsql_endpoint or "",
            connection_class=DSQLConnection,
            kwargs={**_dsql_kwargs(settings), "autocommit": True},
            **common,
        )
    return TransferPool(
        _postgres_conninfo(settings),
        kwargs={
            "connect_timeout": settings.connect_timeout_s,
            "application_name": APPLICATION_NAME,
            "autocommit": True,
            # PostgreSQL blocks on row locks where DSQL would fail at COMMIT; without
            # a bound, one held lock could outlast the retry budget and the message's
            # visibility. 55P03 is then retried like a conflict, within the budget.
            **_options(settings, pooled=True),
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
