"""The SQL schema, and ``python -m worker migrate``.

The same tables run on Aurora DSQL and PostgreSQL. DSQL's DDL rules shape all of it:
one DDL statement per transaction, never DDL and DML together, no SERIAL, sequences,
triggers, temp tables or TRUNCATE, and secondary indexes on a table that may already
hold data are built with ``CREATE INDEX ASYNC`` and waited for with
``sys.wait_for_job``. Every step is idempotent, so ``migrate`` can run on each deploy
and from several tasks at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
import structlog
from psycopg import sql

from worker.settings import Backend

log = structlog.get_logger(__name__)

TABLES: tuple[LiteralString, ...] = (
    # Balances. numeric(18,6) is what DSQL makes of a bare numeric anyway.
    """
    CREATE TABLE IF NOT EXISTS accounts (
        id      integer PRIMARY KEY,
        balance numeric(18,6) NOT NULL
    )
    """,
    # One row per transfer_id: the outcome, written in the same transaction that
    # moved the money (committed) or on its own (rejected). A random UUID key spreads
    # writes over DSQL's key space instead of making a hot spot.
    """
    CREATE TABLE IF NOT EXISTS transfer_results (
        transfer_id    uuid PRIMARY KEY,
        payer_id       integer NOT NULL,
        payee_id       integer NOT NULL,
        amount         numeric(18,6),
        status         varchar(16) NOT NULL,
        reason         varchar(32),
        payer_balance  numeric(18,6),
        attempts       integer NOT NULL,
        transaction_ms double precision,
        enqueued_at    timestamptz,
        completed_at   timestamptz NOT NULL
    )
    """,
    # What `producer setup` created, so `producer audit` can check conservation.
    # A single row (id = 1); numeric(38,6) because 1M accounts x a large balance
    # overflows numeric(18,6).
    """
    CREATE TABLE IF NOT EXISTS ledger_baseline (
        id              integer PRIMARY KEY,
        accounts        integer NOT NULL,
        initial_balance numeric(18,6) NOT NULL,
        expected_total  numeric(38,6) NOT NULL,
        created_at      timestamptz NOT NULL
    )
    """,
)


@dataclass(frozen=True)
class Index:
    """A secondary index, built ASYNC on DSQL and plainly on PostgreSQL."""

    name: str
    table: str

    columns: tuple[str, ...]

    def ddl(self, backend: Backend) -> sql.Composed:
        """The CREATE INDEX statement for ``backend``."""
        return sql.SQL("CREATE INDEX{async_} IF NOT EXISTS {name} ON {table} ({columns})").format(
            async_=sql.SQL(" ASYNC" if backend is Backend.DSQL else ""),
            name=sql.Identifier(self.name),
            table=sql.Identifier(self.table),
            columns=sql.SQL(", ").join(map(sql.Identifier, self.columns)),
        )


INDEXES: tuple[Index, ...] = (
    # Account history: latest transfers paid by / paid to an account.
    Index("transfer_results_payer_idx", "transfer_results", ("payer_id", "completed_at")),
    Index("transfer_results_payee_idx", "transfer_results", ("payee_id", "completed_at")),
)


def statements(backend: Backend) -> list[str]:
    """Every DDL statement ``migrate`` may run, in order (for review and tests)."""
    tables = [" ".join(t.split()) for t in TABLES]
    return tables + [i.ddl(backend).as_string(None) for i in INDEXES]


def migrate(conn: psycopg.Connection[Any], backend: Backend) -> list[str]:
    """Create whatever is missing; returns the names of the objects created.

    ``conn`` is switched to autocommit so each DDL statement is its own transaction,
    as DSQL requires.
    """
    conn.autocommit = True
    created: list[str] = []
    for ddl in TABLES:
        name = ddl.split("EXISTS", 1)[1].split()[0]
        if not _exists(conn, "SELECT 1 FROM pg_tables WHERE tablename = %s", name):
            conn.execute(ddl)
            created.append(name)
    for index in INDEXES:
        if _exists(conn, "SELECT 1 FROM pg_indexes WHERE indexname = %s", index.name):
            continue
        cur = conn.execute(index.ddl(backend))
        if backend is Backend.DSQL:
            # CREATE INDEX ASYNC returns a job id; the index is usable once it is done.
            job = cur.fetchone()
            if job is not None:
                log.info("waiting for index job", index=index.name, job_id=job[0])
                conn.execute("CALL sys.wait_for_job(%s)", (job[0],))
        created.append(index.name)
    for name in created:
        log.info("created", object=name)
    return created


def _exists(conn: psycopg.Connection[Any], query: LiteralString, name: str) -> bool:
    return conn.execute(query, (name,)).fetchone() is not None
