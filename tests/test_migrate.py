"""``python -m worker migrate`` on every deploy: concurrent runs, invalid indexes, roles."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.test_schema import INDEX_NAMES, TABLE_NAMES, catalog, worker_command
from worker.contract import TransferRequest
from worker.db import connect, create_pool
from worker.engine import TransferEngine
from worker.ops.migrate import LEASE, IndexState, Timing, index_state, migrate, wait_for_job
from worker.ops.schema import INDEXES, Roles
from worker.outcomes import Status
from worker.settings import Backend, Settings

ARN = "arn:aws:iam::123456789012:role/transfer-worker"


def as_role(database_url: str, role: str) -> str:
    """The same database, logged in as ``role`` (the embedded server trusts local logins)."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["user"] = role
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def valid_indexes(conn: psycopg.Connection[Any]) -> dict[str, IndexState]:
    return {index.name: index_state(conn, index) for index in INDEXES}


def test_three_concurrent_migrates_all_succeed_with_a_complete_schema(database_url: str) -> None:
    """Three `python -m worker migrate` processes started together on an empty database
    all exit 0; the tables, valid indexes, roles and grants are there once."""
    with ThreadPoolExecutor(3) as pool:
        runs = list(
            pool.map(lambda _: worker_command("migrate", database_url=database_url), [1, 2, 3])
        )
    for run in runs:
        assert run.returncode == 0, run.stderr
    with connect(Settings(database_url=database_url)) as conn:
        assert catalog(conn) == (TABLE_NAMES, INDEX_NAMES)
        assert set(valid_indexes(conn).values()) == {IndexState.VALID}
        assert conn.execute("SELECT count(*) FROM schema_lease").fetchone() == (0,)
        grants = conn.execute(
            "SELECT grantee, table_name, privilege_type FROM information_schema.table_privileges"
            " WHERE grantee LIKE 'transfers_%%' ORDER BY 1, 2, 3"
        ).fetchall()
    assert grants == [
        ("transfers_reader", "accounts", "SELECT"),
        ("transfers_reader", "ledger_baseline", "SELECT"),
        ("transfers_reader", "transfer_results", "SELECT"),
        ("transfers_worker", "accounts", "SELECT"),
        ("transfers_worker", "accounts", "UPDATE"),
        ("transfers_worker", "transfer_results", "INSERT"),
        ("transfers_worker", "transfer_results", "SELECT"),
    ]


def test_an_invalid_index_is_dropped_and_built_again(settings: Settings) -> None:
    """Present but INVALID (what a failed CREATE INDEX ASYNC leaves) is not done: the next
    migrate drops and rebuilds it and reports it."""
    target = INDEXES[0]
    with connect(settings, autocommit=True) as conn:
        conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            (target.name,),
        )
        assert index_state(conn, target) is IndexState.INVALID
        report = migrate(conn, Backend.POSTGRES)
        assert report.created == [target.name]
        assert valid_indexes(conn) == dict.fromkeys(INDEX_NAMES, IndexState.VALID)


def test_an_index_that_fails_twice_makes_migrate_exit_1_and_say_which(database_url: str) -> None:
    """When every CREATE INDEX fails (an event trigger refuses them), migrate tries twice,
    then exits 1 naming the index; the tables it could create are there."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_index() RETURNS event_trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'index builds are broken today'; END $$"
        )
        conn.execute(
            "CREATE EVENT TRIGGER no_indexes ON ddl_command_end"
            " WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION refuse_index()"
        )
    run = worker_command("migrate", database_url=database_url)
    assert run.returncode == 1
    assert "index transfer_results_payer_idx failed to build 2 times" in run.stderr
    assert "index builds are broken today" in run.stderr
    with psycopg.connect(database_url) as conn:
        assert catalog(conn) == (TABLE_NAMES, set())
        assert conn.execute("SELECT count(*) FROM schema_lease").fetchone() == (0,)


def test_a_held_lease_makes_migrate_wait_and_an_expired_one_is_taken(settings: Settings) -> None:
    """While another (live) migrate holds the index lease, migrate waits; once that
    holder is gone it proceeds. A lease past its expiry is taken over at once."""
    with connect(settings, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(INDEXES[0].name)))
        conn.execute(
            "INSERT INTO schema_lease VALUES (%s, %s, %s)",
            (LEASE, uuid.uuid4(), datetime.now(UTC) + timedelta(hours=1)),
        )

    def release_later() -> None:
        time.sleep(0.5)
        with connect(settings, autocommit=True) as other:
            other.execute("DELETE FROM schema_lease")

    started = time.monotonic()
    threading.Thread(target=release_later).start()
    with connect(settings) as conn:
        report = migrate(conn, Backend.POSTGRES, timing=Timing(poll_s=0.05))
    assert time.monotonic() - started >= 0.5
    assert report.created == [INDEXES[0].name]

    with connect(settings, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(INDEXES[0].name)))
        conn.execute(
            "INSERT INTO schema_lease VALUES (%s, %s, %s)",
            (LEASE, uuid.uuid4(), datetime.now(UTC) - timedelta(seconds=1)),
        )
        assert migrate(conn, Backend.POSTGRES, timing=Timing(poll_s=60)).created == [
            INDEXES[0].name
        ]
        assert conn.execute("SELECT count(*) FROM schema_lease").fetchone() == (0,)


def test_wait_for_job_reads_the_boolean_dsql_returns(settings: Settings) -> None:
    """sys.wait_for_job's Boolean decides: false is a failed build (a stand-in procedure
    on PostgreSQL answers the way DSQL's does)."""
    with connect(settings, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sys")
        conn.execute(
            "CREATE PROCEDURE sys.wait_for_job(job text, INOUT ok boolean DEFAULT NULL)"
            " LANGUAGE plpgsql AS $$ BEGIN ok := job <> 'failed-job'; END $$"
        )
        assert wait_for_job(conn, "good-job") is True
        assert wait_for_job(conn, "failed-job") is False


def test_the_worker_role_can_transfer_and_nothing_more(settings: Settings) -> None:
    """Logged in as DB_WORKER_ROLE a transfer commits; DELETE, the baseline table and DDL
    are refused. The reader role can read and not write."""
    with connect(settings) as conn:
        migrate(conn, Backend.POSTGRES, roles=Roles())
        conn.autocommit = False
        conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 0)")
        conn.commit()
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    worker = Settings(database_url=as_role(url, "transfers_worker"), pool_min_size=1)
    with create_pool(worker, min_size=1, max_size=2) as pool:
        request = TransferRequest(
            transfer_id=uuid.uuid4(), payer_id=1, payee_id=2, amount=Decimal(5)
        )
        assert TransferEngine(pool).apply(request).status is Status.COMMITTED
    with psycopg.connect(as_role(url, "transfers_worker"), autocommit=True) as conn:
        for refused in (
            "DELETE FROM accounts",
            "SELECT * FROM ledger_baseline",
            "CREATE TABLE sneaky (id int)",
            "UPDATE transfer_results SET amount = 0",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(refused)
    with psycopg.connect(as_role(url, "transfers_reader"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM transfer_results").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE accounts SET balance = 0")


def test_iam_mappings_are_printed_on_postgres_and_bad_arns_refused(database_url: str) -> None:
    """--worker-arn on PostgreSQL (no IAM) prints the AWS IAM GRANT to run on DSQL; an ARN
    that is not an IAM role or user is a configuration error (exit 2)."""
    run = worker_command("migrate", "--worker-arn", ARN, database_url=database_url)
    assert run.returncode == 0, run.stderr
    assert f"  AWS IAM GRANT transfers_worker TO '{ARN}';" in run.stdout.splitlines()
    bad = worker_command(
        "migrate", "--worker-arn", "arn:aws:s3:::bucket'; DROP", database_url=database_url
    )
    assert bad.returncode == 2
    assert "is not an IAM role or user ARN" in bad.stderr


def test_db_schema_holds_a_whole_environment(database_url: str) -> None:
    """With DB_SCHEMA=staging, migrate creates the schema and its tables there, leaves
    public empty, and the engine transfers inside it."""
    staging = Settings(database_url=database_url, db_schema="staging", pool_min_size=1)
    with connect(staging) as conn:
        migrate(conn, Backend.POSTGRES, schema="staging", roles=Roles.from_settings(staging))
        conn.autocommit = False
        conn.execute("INSERT INTO accounts VALUES (1, 10), (2, 0)")
        conn.commit()
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'staging'")
        }
    assert tables == TABLE_NAMES
    with connect(Settings(database_url=database_url)) as conn:
        assert catalog(conn) == (set(), set())
    with create_pool(staging, max_size=2) as pool:
        request = TransferRequest(
            transfer_id=uuid.uuid4(), payer_id=1, payee_id=2, amount=Decimal(1)
        )
        assert TransferEngine(pool).apply(request).status is Status.COMMITTED


def test_the_custom_resource_migrates_on_create_and_keeps_everything_on_delete(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CloudFormation's Create runs migrate with the role ARNs it is given; Delete
    returns the same physical id without touching (or even reaching) the database."""
    from worker.ops.migrate_handler import on_event

    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    created = on_event(
        {"RequestType": "Create", "ResourceProperties": {"WorkerRoleArns": [ARN]}}, None
    )
    assert created["PhysicalResourceId"] == "dsql-transfers-schema-public"
    assert set(created["Data"]["Created"].split(",")) == TABLE_NAMES | INDEX_NAMES
    assert created["Data"]["Manual"] == f"AWS IAM GRANT transfers_worker TO '{ARN}'"
    with connect(Settings(database_url=database_url)) as conn:
        assert catalog(conn) == (TABLE_NAMES, INDEX_NAMES)

    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    deleted = on_event(
        {"RequestType": "Delete", "PhysicalResourceId": created["PhysicalResourceId"]}, None
    )
    assert deleted == {"PhysicalResourceId": "dsql-transfers-schema-public"}
