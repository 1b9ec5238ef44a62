"""The SQL schema: tables, indexes, and the database roles that may use them.

The same tables run on Aurora DSQL and PostgreSQL. DSQL's DDL rules shape all of it:
one DDL statement per transaction, never DDL and DML together, no SERIAL, sequences,
triggers, temp tables or TRUNCATE, and secondary indexes on a table that may already
hold data are built with ``CREATE INDEX ASYNC`` and waited for with
``sys.wait_for_job``. :mod:`worker.ops.migrate` runs these statements, each on its own.

Roles, least privilege: the workers log in as :attr:`Roles.worker`, which may read and
update balances and read and insert results, nothing else (no DELETE, no DDL); the
producer's read commands as :attr:`Roles.reader` (SELECT only). ``admin`` keeps DDL,
``producer setup`` and the IAM mappings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import LiteralString

from psycopg import sql

from worker.errors import InvalidName
from worker.settings import Backend, Settings

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
    # Who is building indexes right now (worker.ops.migrate): several tasks start at once
    # on a deploy, and only one may drop and rebuild an index; DSQL has no advisory
    # locks, so the lease is a row, won by the first committer.
    """
    CREATE TABLE IF NOT EXISTS schema_lease (
        name       varchar(64) PRIMARY KEY,
        holder     uuid NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
)


@dataclass(frozen=True)
class Column:
    """A column added after its table was first released: ``ALTER TABLE ... ADD COLUMN``
    (nullable and without a default, the only kind DSQL can add)."""

    table: str
    name: str
    type: LiteralString

    def ddl(self) -> sql.Composed:
        """The ALTER TABLE statement."""
        return sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            sql.Identifier(self.table), sql.Identifier(self.name), sql.SQL(self.type)
        )


ADDED_COLUMNS: tuple[Column, ...] = (
    # The pipelined engine marks the result row its attempt wrote, so that its UPDATE
    # moves money only for that row, never for one an earlier delivery wrote.
    Column("transfer_results", "attempt_id", "uuid"),
)


def table_name(ddl: str) -> str:
    """The table a ``CREATE TABLE IF NOT EXISTS`` statement creates."""
    return ddl.split("EXISTS", 1)[1].split(maxsplit=1)[0]


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

    def drop(self) -> sql.Composed:
        """Drop the index (on DSQL this also cancels a build in progress)."""
        return sql.SQL("DROP INDEX IF EXISTS {name}").format(name=sql.Identifier(self.name))


INDEXES: tuple[Index, ...] = (
    # Account history: latest transfers paid by / paid to an account.
    Index("transfer_results_payer_idx", "transfer_results", ("payer_id", "completed_at")),
    Index("transfer_results_payee_idx", "transfer_results", ("payee_id", "completed_at")),
)


def statements(backend: Backend) -> list[str]:
    """Every table and index statement ``migrate`` may run, in order."""
    tables = [" ".join(t.split()) for t in TABLES]
    columns = [c.ddl().as_string(None) for c in ADDED_COLUMNS]
    return tables + columns + [i.ddl(backend).as_string(None) for i in INDEXES]


# --- roles ------------------------------------------------------------------------------

WORKER_PRIVILEGES: dict[str, tuple[LiteralString, ...]] = {
    # UPDATE ... RETURNING balance reads the row: SELECT as well as UPDATE.
    "accounts": ("SELECT", "UPDATE"),
    # The earlier-result read, the result insert (ON CONFLICT DO NOTHING RETURNING).
    "transfer_results": ("SELECT", "INSERT"),
}
"""What a transfer touches, and nothing more: no DELETE, no ledger_baseline, no DDL."""
READER_PRIVILEGES: dict[str, tuple[LiteralString, ...]] = {
    "accounts": ("SELECT",),
    "transfer_results": ("SELECT",),
    "ledger_baseline": ("SELECT",),
}
"""``producer balance | history | stats | audit | report`` and the client's result reads."""


@dataclass(frozen=True)
class Roles:
    """The two login roles ``migrate`` creates and grants."""

    worker: str = "transfers_worker"
    reader: str = "transfers_reader"

    @classmethod
    def from_settings(cls, settings: Settings) -> Roles:
        """DB_WORKER_ROLE and DB_READER_ROLE."""
        return cls(settings.db_worker_role, settings.db_reader_role)

    def privileges(self) -> dict[str, dict[str, tuple[LiteralString, ...]]]:
        """Role -> table -> privileges."""
        return {self.worker: WORKER_PRIVILEGES, self.reader: READER_PRIVILEGES}


PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Role and schema names: what the settings accept, safe to write unquoted."""
IAM_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]{1,512}")


def plain(name: str) -> sql.SQL:
    """``name`` unquoted, as DSQL's documentation writes roles (``AWS IAM GRANT app``);
    refused unless it is a plain lower-case identifier."""
    if not PLAIN_NAME.fullmatch(name):
        raise InvalidName(f"{name!r} is not a plain lower-case identifier")
    return sql.SQL(name)  # validated above: a plain identifier, not user-supplied SQL


def create_schema(schema: str) -> sql.Composed:
    """``CREATE SCHEMA IF NOT EXISTS`` (only run for a schema other than public)."""
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(plain(schema))


def create_role(role: str) -> sql.Composed:
    """A login role without a password: on DSQL it logs in with an IAM token only."""
    return sql.SQL("CREATE ROLE {} WITH LOGIN").format(plain(role))


def grants(roles: Roles, schema: str) -> list[sql.Composed]:
    """The GRANT statements giving each role exactly its privileges, one per statement."""
    out = []
    for role, tables in roles.privileges().items():
        out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(plain(schema), plain(role)))
        for table, privileges in tables.items():
            out.append(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(", ").join(map(sql.SQL, privileges)), plain(table), plain(role)
                )
            )
    return out


def iam_grant(role: str, arn: str) -> sql.Composed:
    """DSQL's mapping of an IAM role (or user) ARN to a database role."""
    if not IAM_ARN.fullmatch(arn):
        raise InvalidName(f"{arn!r} is not an IAM role or user ARN")
    return sql.SQL("AWS IAM GRANT {} TO {}").format(plain(role), sql.Literal(arn))


def access_statements(
    roles: Roles, schema: str = "public", iam: dict[str, tuple[str, ...]] | None = None
) -> list[str]:
    """Every schema, role, grant and IAM-mapping statement ``migrate`` may run, in order."""
    out = [create_schema(schema).as_string(None)] if schema != "public" else []
    out += [create_role(role).as_string(None) for role in (roles.worker, roles.reader)]
    out += [g.as_string(None) for g in grants(roles, schema)]
    for role, arns in (iam or {}).items():
        out += [iam_grant(role, arn).as_string(None) for arn in arns]
    return out
