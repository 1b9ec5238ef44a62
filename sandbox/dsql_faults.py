"""Aurora DSQL's failure modes, given to a PostgreSQL database where they differ.

PostgreSQL and DSQL fail differently, and code tested only on PostgreSQL meets DSQL's
ways for the first time in production. :class:`DsqlFaults` installs, into one
database, triggers that make PostgreSQL fail like DSQL:

- **Commit-time conflicts** (:meth:`~DsqlFaults.conflict_at_commit`): DSQL detects
  write conflicts at COMMIT, after every statement succeeded, and fails the loser with
  SQLSTATE 40001 "change conflicts with another transaction, please retry: (OC000)".
  A deferred constraint trigger on the tables raises exactly that when the
  transaction commits, for a share of the transactions that wrote (decided once per
  transaction) or for the next N of them.
- **OC001 at a statement** (:meth:`~DsqlFaults.conflict_at_statement`): a session whose
  catalog went stale fails a statement with "schema has been updated by another
  transaction, please retry: (OC001)", as 40001 or with OC001 as the SQLSTATE.
- **The row limit** (:meth:`~DsqlFaults.limit_rows`): DSQL refuses a transaction that
  mutates more than 3,000 rows with SQLSTATE 54000; statement-level triggers with
  transition tables count the rows a transaction inserts, updates and deletes.

:class:`LifetimeCap` is the fourth: DSQL closes a connection at its 60-minute cap; a
background thread here terminates the database's backends older than N seconds.

Triggers are not DSQL (DSQL has none): this is test equipment for PostgreSQL only.
Faults raised are counted by sequences, which a rollback does not undo, so a test can
compare what was injected with the retries it saw (:meth:`~DsqlFaults.raised`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, LiteralString, Self

import psycopg
from psycopg import sql

from sandbox.lifecycle import Service

SCHEMA = "dsql_faults"
TABLES = ("accounts", "transfer_results", "ledger_baseline")
"""The tables the faults watch: every table of :mod:`worker.ops.schema`."""
ROW_LIMIT = 3000
"""DSQL's rows mutated per transaction."""

OC000_MESSAGE = "change conflicts with another transaction, please retry: (OC000)"
OC001_MESSAGE = "schema has been updated by another transaction, please retry: (OC001)"
ROW_LIMIT_MESSAGE = "transaction row limit exceeded"

_FUNCTIONS: LiteralString = """
CREATE SCHEMA dsql_faults;

CREATE TABLE dsql_faults.config (
    id                 integer PRIMARY KEY CHECK (id = 1),
    commit_share       double precision NOT NULL DEFAULT 0,
    commit_until       bigint NOT NULL DEFAULT 0,
    statement_share    double precision NOT NULL DEFAULT 0,
    statement_sqlstate text NOT NULL DEFAULT '40001',
    row_limit          integer
);
INSERT INTO dsql_faults.config (id) VALUES (1);

CREATE SEQUENCE dsql_faults.commit_conflicts;
CREATE SEQUENCE dsql_faults.statement_conflicts;
CREATE SEQUENCE dsql_faults.row_limits;

CREATE FUNCTION dsql_faults.raised(name text) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(max(last_value), 0) FROM pg_sequences
    WHERE schemaname = 'dsql_faults' AND sequencename = name
$$;

-- Deferred: runs at COMMIT, once per written row; decides once per transaction.
CREATE FUNCTION dsql_faults.commit_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg dsql_faults.config;
    decided text := current_setting('dsql_faults.commit_decided', true);
BEGIN
    IF decided IS NOT NULL AND decided <> '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('dsql_faults.commit_decided', 'done', true);
    SELECT * INTO cfg FROM dsql_faults.config WHERE id = 1;
    IF dsql_faults.raised('commit_conflicts') < cfg.commit_until
       OR random() < cfg.commit_share THEN
        PERFORM nextval('dsql_faults.commit_conflicts');
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'change conflicts with another transaction, please retry: (OC000)';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION dsql_faults.statement_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg dsql_faults.config;
BEGIN
    SELECT * INTO cfg FROM dsql_faults.config WHERE id = 1;
    IF random() < cfg.statement_share THEN
        PERFORM nextval('dsql_faults.statement_conflicts');
        RAISE EXCEPTION USING ERRCODE = cfg.statement_sqlstate,
            MESSAGE = 'schema has been updated by another transaction, please retry: (OC001)';
    END IF;
    RETURN NULL;
END $$;

-- Statement-level, with the statement's rows as a transition table; the running
-- total lives in a transaction-local setting.
CREATE FUNCTION dsql_faults.count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg dsql_faults.config;
    touched bigint;
    total bigint;
BEGIN
    SELECT * INTO cfg FROM dsql_faults.config WHERE id = 1;
    IF cfg.row_limit IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        SELECT count(*) INTO touched FROM old_rows;
    ELSE
        SELECT count(*) INTO touched FROM new_rows;
    END IF;
    total := coalesce(nullif(current_setting('dsql_faults.rows', true), ''), '0')::bigint
             + touched;
    PERFORM set_config('dsql_faults.rows', total::text, true);
    IF total > cfg.row_limit THEN
        PERFORM nextval('dsql_faults.row_limits');
        RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'transaction row limit exceeded',
            DETAIL = format('%s rows mutated, the limit is %s', total, cfg.row_limit);
    END IF;
    RETURN NULL;
END $$;
"""

_TRIGGERS: LiteralString = """
CREATE CONSTRAINT TRIGGER dsql_faults_commit_conflict
    AFTER INSERT OR UPDATE OR DELETE ON {table}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION dsql_faults.commit_conflict();
CREATE TRIGGER dsql_faults_statement_conflict
    BEFORE INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION dsql_faults.statement_conflict();
CREATE TRIGGER dsql_faults_rows_inserted AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dsql_faults.count_rows();
CREATE TRIGGER dsql_faults_rows_updated AFTER UPDATE ON {table}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dsql_faults.count_rows();
CREATE TRIGGER dsql_faults_rows_deleted AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dsql_faults.count_rows();
"""


@dataclass(frozen=True, slots=True)
class Raised:
    """How many faults of each kind were raised since :meth:`DsqlFaults.install`."""

    commit_conflicts: int
    statement_conflicts: int
    row_limits: int


class DsqlFaults:
    """DSQL's failure modes in the PostgreSQL database at ``database_url``.

    :meth:`install` once (after the schema is migrated), then switch each fault on
    and off at will; every switch is committed at once and seen by every session's
    next statement. All faults start switched off.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def install(self) -> Self:
        """Create the ``dsql_faults`` schema and the triggers on :data:`TABLES`."""
        with self._connect() as conn:
            conn.execute(_FUNCTIONS)
            for table in TABLES:
                conn.execute(sql.SQL(_TRIGGERS).format(table=sql.Identifier(table)))
        return self

    def uninstall(self) -> None:
        """Drop the triggers and the ``dsql_faults`` schema."""
        with self._connect() as conn:
            for table in TABLES:
                for trigger in (
                    "dsql_faults_commit_conflict",
                    "dsql_faults_statement_conflict",
                    "dsql_faults_rows_inserted",
                    "dsql_faults_rows_updated",
                    "dsql_faults_rows_deleted",
                ):
                    conn.execute(
                        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            sql.Identifier(trigger), sql.Identifier(table)
                        )
                    )
            conn.execute("DROP SCHEMA IF EXISTS dsql_faults CASCADE")

    def conflict_at_commit(self, share: float = 0.0, *, next_commits: int = 0) -> None:
        """Fail with OC000 at COMMIT a ``share`` (0..1) of the transactions that write,
        and, before that, the next ``next_commits`` of them (one by one, in commit
        order; concurrent commits may overshoot by the number running at once)."""
        _check_share(share)
        self._set(
            "commit_share = %s, commit_until = %s",
            (share, self.raised().commit_conflicts + next_commits),
        )

    def conflict_at_statement(self, share: float = 0.0, *, sqlstate: str = "40001") -> None:
        """Fail a ``share`` of INSERT/UPDATE/DELETE statements with OC001's message and
        SQLSTATE ``sqlstate`` (DSQL's 40001, or ``"OC001"`` itself)."""
        _check_share(share)
        if len(sqlstate) != 5:
            raise ValueError("a SQLSTATE has five characters")
        self._set("statement_share = %s, statement_sqlstate = %s", (share, sqlstate))

    def limit_rows(self, rows: int | None = ROW_LIMIT) -> None:
        """Fail (54000) any transaction that mutates more than ``rows`` rows in total;
        ``None`` lifts the limit."""
        if rows is not None and rows < 0:
            raise ValueError("rows must be >= 0")
        self._set("row_limit = %s", (rows,))

    def off(self) -> None:
        """Switch every fault off."""
        self._set("commit_share = 0, commit_until = 0, statement_share = 0, row_limit = NULL", ())

    def raised(self) -> Raised:
        """The faults raised so far (rolled-back transactions included)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT dsql_faults.raised('commit_conflicts'),"
                " dsql_faults.raised('statement_conflicts'), dsql_faults.raised('row_limits')"
            ).fetchone()
        assert row is not None
        return Raised(*(int(value or 0) for value in row))

    def _set(self, assignments: LiteralString, params: tuple[Any, ...]) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE dsql_faults.config SET " + assignments + " WHERE id = 1", params)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)


def _check_share(share: float) -> None:
    if not 0 <= share <= 1:
        raise ValueError("share must be between 0 and 1")


class LifetimeCap(Service):
    """Terminate the database's client backends once they are ``max_age_s`` old.

    DSQL closes every connection at its 60-minute cap; this does the same to the
    backends of ``database_url``'s database (every ``poll_s``, from a background
    thread, with ``pg_terminate_backend``: the client sees 57P01 or a closed socket).
    ``application_name``, when given, limits it to that application's connections.
    """

    def __init__(
        self,
        database_url: str,
        max_age_s: float,
        *,
        poll_s: float = 0.05,
        application_name: str | None = None,
    ) -> None:
        self.database_url = database_url
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self.application_name = application_name
        self.terminated = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifetime-cap", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> Self:
        """Start terminating in the background."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop; re-raises what stopped the thread early, if anything did."""
        self._stop.set()
        self._thread.join(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                while not self._stop.wait(self.poll_s):
                    row = conn.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                        " FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND backend_type = 'client backend'"
                        " AND backend_start < now() - make_interval(secs => %s)"
                        " AND (%s::text IS NULL OR application_name = %s)",
                        (self.max_age_s, self.application_name, self.application_name),
                    ).fetchone()
                    self.terminated += int(row[0]) if row else 0
        except BaseException as exc:  # noqa: BLE001 - re-raised by close()
            self._error = exc
