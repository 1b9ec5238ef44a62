"""How worker.db sets up connections: the schema, prepared statements, the pool check."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.pgwire import Certificates, FakeLoginServer
from tests.test_dsql_auth import certs, connect_once, dsql_settings, fake_aws, server
from worker.db import TransferPool, _configure, connect, create_pool
from worker.settings import Backend, Settings

__all__ = ["certs", "fake_aws", "server"]  # fixtures shared with the auth tests


class RecordingConnection:
    """Just enough of a connection to see what the pool's check sends."""

    def __init__(self, *, autocommit: bool) -> None:
        self.autocommit = autocommit
        self.sent: list[tuple[str, bool]] = []

    def execute(self, query: str) -> None:
        self.sent.append((query, self.autocommit))


@pytest.mark.parametrize("autocommit", [True, False])
def test_pool_check_sends_select_1_outside_a_transaction(autocommit: bool) -> None:
    """The check is an explicit ``SELECT 1`` in autocommit (psycopg_pool's own sends an
    empty query, which DSQL does not document), and leaves autocommit as it found it."""
    conn = RecordingConnection(autocommit=autocommit)
    TransferPool.check_connection(conn)  # type: ignore[arg-type]
    assert conn.sent == [("SELECT 1", True)]
    assert conn.autocommit is autocommit


def test_pool_check_replaces_a_dead_connection(settings: Settings, server_url: str) -> None:
    """``pool.check()`` with the SELECT 1 check drops a terminated backend and refills."""
    with create_pool(settings, min_size=1, max_size=1) as pool:
        pool.wait()
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        pool.check()
        pool.wait()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid


def test_db_schema_is_the_search_path_of_every_connection(settings: Settings) -> None:
    """DB_SCHEMA=staging puts unqualified names in schema staging, for the pool and for
    one-off connections; the default public sends no option at all."""
    with connect(settings, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA staging")
    staged = settings.model_copy(update={"db_schema": "staging"})
    with connect(staged) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("staging",)
    with create_pool(staged, min_size=1, max_size=1) as pool, pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("staging",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("2s",)
    with connect(settings) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_dsql_login_carries_the_schema_as_a_startup_option(
    certs: Certificates, server: FakeLoginServer
) -> None:
    """On DSQL the schema travels in the StartupMessage (no extra round trip)."""
    connect_once(dsql_settings(certs, db_schema="smoke_1"))
    (login,) = server.logins()
    assert login.startup is not None
    assert login.startup["options"] == "-c search_path=smoke_1"


def test_dsql_connections_never_prepare_statements(settings: Settings) -> None:
    """The DSQL configuration turns psycopg's automatic preparation off (no named
    statements, no DEALLOCATE ALL after a rollback); PostgreSQL keeps the default."""
    with connect(settings) as conn:
        assert conn.prepare_threshold == 5
        _configure(Backend.DSQL, conn)
        assert conn.prepare_threshold is None
        for _ in range(10):
            conn.execute("SELECT 1")
        prepared: Any = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared == (0,)
