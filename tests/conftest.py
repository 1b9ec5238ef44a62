"""Shared fixtures: a real PostgreSQL for every test, never a mock.

One embedded server per test session (or the server in ``DATABASE_URL`` when set);
each test that needs the schema gets its own freshly created and migrated database,
so tests cannot see each other's rows and can run in any order.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import sql
from psycopg_pool import ConnectionPool

from sandbox.dsql_faults import DsqlFaults, LifetimeCap
from sandbox.postgres import EmbeddedPostgres
from sandbox.sqs import LocalSqs, Queues
from tests.support import policy
from worker.db import APPLICATION_NAME, connect, create_pool
from worker.engine import TransferEngine
from worker.logs import QUIET_LOGGERS
from worker.ops.migrate import migrate
from worker.settings import Backend, Settings, Statements


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo configure_logging (called by in-process CLI mains) after each test."""
    loggers = [logging.getLogger(), *map(logging.getLogger, QUIET_LOGGERS)]
    levels = [logger.level for logger in loggers]
    handlers = list(loggers[0].handlers)
    _structlog_to_stderr()
    yield
    loggers[0].handlers[:] = handlers
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    _structlog_to_stderr()


def _structlog_to_stderr() -> None:
    # Unconfigured structlog prints to stdout, where CLI tests read their output.
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a PostgreSQL server whose user may CREATE DATABASE."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    with EmbeddedPostgres() as pg:
        yield pg.url


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A new, empty database for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at this test's migrated database."""
    settings = Settings(database_url=database_url, pool_min_size=1, pool_max_size=20)
    with connect(settings) as conn:
        migrate(conn, Backend.POSTGRES)
    return settings


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool[Any]]:
    """An open connection pool on the test database."""
    with create_pool(settings) as pool:
        yield pool


@pytest.fixture
def statements() -> Statements:
    """How the engine sends a transfer; the engine suites run both (they override this)."""
    return Statements.SINGLE


@pytest.fixture
def engine(pool: ConnectionPool[Any], statements: Statements) -> TransferEngine:
    """A transfer engine with the default retry policy."""
    return TransferEngine(pool, policy(), statements=statements)


@pytest.fixture
def dsql_faults(settings: Settings) -> Iterator[DsqlFaults]:
    """DSQL's failure modes (commit-time OC000, OC001 at a statement, the 54000 row
    limit) installed in this test's database, all switched off; see sandbox.dsql_faults.

    Switch them on in the test, e.g. ``dsql_faults.conflict_at_commit(0.3)`` or
    ``dsql_faults.limit_rows(1000)`` to make ``producer setup`` meet 54000.
    """
    assert settings.database_url is not None
    faults = DsqlFaults(settings.database_url.get_secret_value()).install()
    yield faults
    faults.off()


@pytest.fixture
def lifetime_cap(settings: Settings) -> Iterator[LifetimeCap]:
    """The server closes this database's connections of the product (application_name
    ``dsql-transfers``) once they are 0.5 s old, as DSQL does at its 60-minute cap."""
    assert settings.database_url is not None
    with LifetimeCap(
        settings.database_url.get_secret_value(), 0.5, application_name=APPLICATION_NAME
    ) as cap:
        yield cap


@pytest.fixture(scope="session")
def local_sqs() -> Iterator[LocalSqs]:
    """moto's SQS server on loopback, shared by the session (queues are per test)."""
    with LocalSqs() as sqs:
        yield sqs


@pytest.fixture
def queues(local_sqs: LocalSqs, monkeypatch: pytest.MonkeyPatch) -> Queues:
    """A fresh transfer queue + DLQ (visibility 30 s, the default schedule's redrive); the
    environment points boto3 at the local server."""
    for key, value in local_sqs.env().items():
        monkeypatch.setenv(key, value)
    return local_sqs.create_queues(f"transfers-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def sqs_settings(settings: Settings, queues: Queues) -> Settings:
    """Database and queue settings for this test."""
    return settings.model_copy(
        update={"queue_url": queues.queue_url, "dlq_url": queues.dlq_url, "receive_wait_s": 1}
    )
