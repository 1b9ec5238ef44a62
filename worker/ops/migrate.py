"""``python -m worker migrate``: create whatever is missing, safely, on every deploy.

Every task of a deploy may run it at the same moment, so each step is idempotent and
survives its twins:

- each statement runs alone in its own transaction (DSQL: one DDL per transaction,
  never DDL and DML together) and is retried on 40001/OC000/OC001 (DSQL refuses a
  statement whose catalog snapshot another migrate just changed) with backoff;
- "already exists" from a concurrent twin (42P07, 42710, 42P06, or 23505 from
  PostgreSQL's catalog) counts as done: the object exists, which is what was asked;
- indexes are built by one process at a time, the holder of a lease row in
  ``schema_lease`` (DSQL has no advisory locks; the first committer of the row wins).
  The others wait until the holder releases it (or its lease expires) and then find
  the indexes valid. An index that exists but is INVALID (a failed ``CREATE INDEX
  ASYNC`` leaves one behind; ``sys.wait_for_job`` returns false) is not "done": the
  holder drops it and builds it again, and if the second build fails too, migrate
  fails with a message naming the index.

Then the roles: the schema (when not ``public``), the worker and reader login roles,
their grants, and for DSQL the ``AWS IAM GRANT`` mapping of each given IAM ARN. On
PostgreSQL, which has no IAM mapping, those statements are returned for the operator
instead of run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, LiteralString

import psycopg
import structlog
from psycopg import sql

from worker.engine import RetryPolicy
from worker.errors import Fault, MigrationFailed, classify, one_line
from worker.ops.schema import (
    ADDED_COLUMNS,
    INDEXES,
    TABLES,
    Index,
    Roles,
    create_role,
    create_schema,
    grants,
    iam_grant,
    table_name,
)
from worker.settings import Backend

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[Any]
Statement = LiteralString | sql.Composed

ALREADY_EXISTS = frozenset({"42P07", "42710", "42P06", "42701", "23505"})
"""duplicate_table, duplicate_object, duplicate_schema, duplicate_column, and
unique_violation (PostgreSQL reports two concurrent CREATE ... IF NOT EXISTS as a
duplicate key in its catalog)."""
LEASE = "indexes"
STEP_POLICY = RetryPolicy(max_attempts=20, budget_s=60.0, base_s=0.05, cap_s=2.0)
"""Retries of one statement that met a concurrent DDL (a conflict, not an error)."""
BUILD_ATTEMPTS = 2


class IndexState(Enum):
    """What the catalog says about an index."""

    MISSING = "missing"
    INVALID = "invalid"
    VALID = "valid"


@dataclass
class MigrationReport:
    """What one run did."""

    created: list[str] = field(default_factory=list)
    """Tables and indexes this run created (or rebuilt)."""
    columns: list[str] = field(default_factory=list)
    """Columns this run added to existing tables (``table.column``)."""
    roles: list[str] = field(default_factory=list)
    """Roles this run created."""
    granted: list[str] = field(default_factory=list)
    """Grant and IAM-mapping statements this run executed."""
    manual: list[str] = field(default_factory=list)
    """Statements to run by hand: IAM mappings on a backend without IAM (PostgreSQL)."""


@dataclass(frozen=True)
class Timing:
    """How long to hold and to wait for the index lease (shortened by tests)."""

    lease_ttl_s: float = 1800.0
    poll_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep


def migrate(
    conn: Connection,
    backend: Backend,
    *,
    schema: str = "public",
    roles: Roles | None = None,
    iam: Mapping[str, Sequence[str]] | None = None,
    timing: Timing | None = None,
) -> MigrationReport:
    """Create the schema's missing objects; with ``roles``, also the roles and grants.

    ``schema`` must be the connection's search path (DB_SCHEMA); it is created when it
    is not ``public``. ``iam`` maps a database role to the IAM ARNs that may log in as
    it. ``conn`` is switched to autocommit: every statement is its own transaction.
    Raises :class:`MigrationFailed` when an index cannot be built.
    """
    conn.autocommit = True
    timing = timing or Timing()
    report = MigrationReport()
    if schema != "public":
        _execute(conn, create_schema(schema))
    for ddl in TABLES:
        name = table_name(ddl)
        if not _exists(conn, _TABLE_EXISTS, name):
            _execute(conn, ddl)
            report.created.append(name)
    for column in ADDED_COLUMNS:
        if _query(conn, _COLUMN_EXISTS, (column.table, column.name)) is None:
            # A twin adding it first answers 42701 (duplicate_column): done too.
            _execute(conn, column.ddl())
            report.columns.append(f"{column.table}.{column.name}")
    _ensure_indexes(conn, backend, report, timing)
    if roles is not None:
        _ensure_roles(conn, backend, roles, schema=schema, iam=iam or {}, report=report)
    for name in report.created:
        log.info("created", object=name)
    return report


# --- statements, retried --------------------------------------------------------------


def _execute(conn: Connection, statement: Statement, params: Sequence[Any] = ()) -> bool:
    """Run one statement in its own transaction; False when a twin got there first."""
    for attempt in range(1, STEP_POLICY.max_attempts + 1):
        try:
            conn.execute(statement, params)
            return True
        except psycopg.Error as exc:
            if exc.sqlstate in ALREADY_EXISTS:
                return False
            if classify(exc) is not Fault.CONFLICT or attempt == STEP_POLICY.max_attempts:
                raise
            time.sleep(STEP_POLICY.backoff_s(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _query(conn: Connection, query: LiteralString, params: Sequence[Any]) -> Any:
    """The first row of a catalog query, retried like :func:`_execute`."""
    for attempt in range(1, STEP_POLICY.max_attempts + 1):
        try:
            return conn.execute(query, params).fetchone()
        except psycopg.Error as exc:
            if classify(exc) is not Fault.CONFLICT or attempt == STEP_POLICY.max_attempts:
                raise
            time.sleep(STEP_POLICY.backoff_s(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


_TABLE_EXISTS: LiteralString = (
    "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = %s"
)
_ROLE_EXISTS: LiteralString = "SELECT 1 FROM pg_roles WHERE rolname = %s"
_COLUMN_EXISTS: LiteralString = (
    "SELECT 1 FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s"
)
_INDEX_VALID: LiteralString = (
    "SELECT i.indisvalid FROM pg_index AS i"
    " JOIN pg_class AS c ON c.oid = i.indexrelid"
    " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema() AND c.relname = %s"
)


LEASE_INSERT: LiteralString = (
    "INSERT INTO schema_lease (name, holder, expires_at) VALUES (%s, %s, %s)"
)
LEASE_TAKE_OVER: LiteralString = (
    "UPDATE schema_lease SET holder = %s, expires_at = %s WHERE name = %s AND expires_at < %s"
)
LEASE_RELEASE: LiteralString = "DELETE FROM schema_lease WHERE name = %s AND holder = %s"
WAIT_FOR_JOB: LiteralString = "CALL sys.wait_for_job(%s)"
CATALOG_QUERIES: tuple[LiteralString, ...] = (
    _TABLE_EXISTS,
    _ROLE_EXISTS,
    _COLUMN_EXISTS,
    _INDEX_VALID,
)
LEASE_STATEMENTS: tuple[LiteralString, ...] = (
    LEASE_INSERT,
    LEASE_TAKE_OVER,
    LEASE_RELEASE,
    WAIT_FOR_JOB,
)
"""Every fixed statement migrate sends besides the DDL (for review and linting)."""


def _exists(conn: Connection, query: LiteralString, name: str) -> bool:
    return _query(conn, query, (name,)) is not None


def index_state(conn: Connection, index: Index) -> IndexState:
    """Missing, present but invalid (a failed or unfinished build), or valid."""
    row = _query(conn, _INDEX_VALID, (index.name,))
    if row is None:
        return IndexState.MISSING
    return IndexState.VALID if row[0] else IndexState.INVALID


# --- indexes, one builder at a time ---------------------------------------------------


def _ensure_indexes(
    conn: Connection, backend: Backend, report: MigrationReport, timing: Timing
) -> None:
    me = uuid.uuid4()
    waiting = False
    while True:
        if all(index_state(conn, i) is IndexState.VALID for i in INDEXES):
            return
        if _acquire(conn, me, timing.lease_ttl_s):
            try:
                for index in INDEXES:
                    if _build_until_valid(conn, backend, index):
                        report.created.append(index.name)
            finally:
                _execute(conn, LEASE_RELEASE, (LEASE, me))
            return
        # Another migrate holds the lease: its indexes will be valid when it is done.
        if not waiting:
            waiting = True
            log.info("another migrate is building indexes; waiting for it")
        timing.sleep(timing.poll_s)


def _acquire(conn: Connection, me: uuid.UUID, ttl_s: float) -> bool:
    """Take the index lease, or an expired one; False while someone else holds it."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s)
    try:
        conn.execute(LEASE_INSERT, (LEASE, me, expires))
        return True
    except psycopg.Error as exc:
        if exc.sqlstate != "23505" and classify(exc) is not Fault.CONFLICT:
            raise
    try:
        # A holder that died keeps the row until it expires; then the first to
        # update it (first committer on DSQL, row lock on PostgreSQL) takes over.
        cur = conn.execute(LEASE_TAKE_OVER, (me, expires, LEASE, now))
    except psycopg.Error as exc:
        if classify(exc) is not Fault.CONFLICT:
            raise
        return False
    return cur.rowcount == 1


def _build_until_valid(conn: Connection, backend: Backend, index: Index) -> bool:
    """Make ``index`` valid; True when this call built it. Raises MigrationFailed."""
    error = ""
    for attempt in range(1, BUILD_ATTEMPTS + 1):
        state = index_state(conn, index)
        if state is IndexState.VALID:
            return attempt > 1
        if state is IndexState.INVALID:
            log.warning("index present but invalid: dropping it", index=index.name)
            _execute(conn, index.drop())
        error = _build(conn, backend, index)
        if not error and index_state(conn, index) is IndexState.VALID:
            return True
        error = error or "the index is still invalid after its build"
        log.warning("index build failed", index=index.name, attempt=attempt, error=error)
    raise MigrationFailed(
        f"index {index.name} failed to build {BUILD_ATTEMPTS} times: {error}; "
        f"the schema is incomplete (run migrate again once the cause is fixed)"
    )


def _build(conn: Connection, backend: Backend, index: Index) -> str:
    """Run the index DDL (and wait for its job on DSQL); the failure, or ''."""
    try:
        cur = conn.execute(index.ddl(backend))
        if backend is Backend.DSQL:
            # CREATE INDEX ASYNC returns a job id; sys.wait_for_job blocks until the job
            # ends and returns whether it succeeded.
            job = cur.fetchone() if cur.description else None
            if job is not None:
                log.info("waiting for index job", index=index.name, job_id=job[0])
                if not wait_for_job(conn, job[0]):
                    return f"index job {job[0]} failed"
    except psycopg.Error as exc:
        if exc.sqlstate in ALREADY_EXISTS:
            return ""
        if classify(exc) is Fault.CONFLICT:
            return f"conflict: {exc}"
        return one_line(exc)
    return ""


def wait_for_job(conn: Connection, job_id: Any) -> bool:
    """``CALL sys.wait_for_job(job_id)``: True when the job succeeded."""
    row = conn.execute(WAIT_FOR_JOB, (job_id,)).fetchone()
    # Documented as returning a Boolean; an empty answer is judged by the catalog.
    return row is None or bool(row[0])


# --- roles ----------------------------------------------------------------------------


def _ensure_roles(
    conn: Connection,
    backend: Backend,
    roles: Roles,
    *,
    schema: str,
    iam: Mapping[str, Sequence[str]],
    report: MigrationReport,
) -> None:
    for role in (roles.worker, roles.reader):
        if not _exists(conn, _ROLE_EXISTS, role) and _execute(conn, create_role(role)):
            report.roles.append(role)
    for grant in grants(roles, schema):
        _execute(conn, grant)
        report.granted.append(grant.as_string(conn))
    for role, arns in iam.items():
        if role not in (roles.worker, roles.reader, "admin"):
            raise MigrationFailed(f"{role!r} is not a role migrate manages")
        for arn in arns:
            statement = iam_grant(role, arn)
            if backend is not Backend.DSQL:
                report.manual.append(statement.as_string(conn))
                continue
            try:
                _execute(conn, statement)
            except psycopg.Error as exc:
                # Mapping an ARN twice is not an error worth failing a deploy for.
                if "already" not in str(exc).lower():
                    raise
            report.granted.append(statement.as_string(conn))
