"""Connection faults and the retry policy: retried on a fresh connection, bounded."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool, PoolClosed

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.postgres import EmbeddedPostgres
from tests.support import policy
from worker.contract import TransferRequest
from worker.db import connect, create_pool
from worker.engine import TransferEngine
from worker.errors import DatabaseUnavailable, Fault, classify
from worker.ops.migrate import migrate
from worker.outcomes import Status
from worker.settings import Settings


def request(payer: int = 1, payee: int = 2, amount: str = "1") -> TransferRequest:
    return TransferRequest(
        transfer_id=uuid.uuid4(), payer_id=payer, payee_id=payee, amount=Decimal(amount)
    )


def test_terminated_backends_are_replaced_and_the_transfer_commits(
    settings: Settings, server_url: str
) -> None:
    """pg_terminate_backend on every pooled connection: the next transfer still commits."""
    reset_accounts(settings, 4, Decimal(100))
    with create_pool(settings, min_size=3, max_size=3) as pool:
        pool.wait()
        engine = TransferEngine(pool)
        assert engine.apply(request()).status is Status.COMMITTED
        with psycopg.connect(server_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'dsql-transfers' AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 3
        results = [engine.apply(request()) for _ in range(5)]
    assert all(r.status is Status.COMMITTED for r in results)
    assert results[0].attempts >= 2, "the first transfer met a dead connection"
    with connect(settings) as conn:
        assert run_audit(conn).violations == []


def test_server_restart_mid_load_loses_nothing() -> None:
    """Transfers running while PostgreSQL restarts either commit once or fail retryably."""
    with EmbeddedPostgres() as pg:
        settings = Settings(database_url=pg.url, pool_min_size=2, pool_max_size=4)
        with connect(settings) as conn:
            migrate(conn, settings.backend)
        reset_accounts(settings, 10, Decimal(1000))
        outcomes: list[Any] = []
        with create_pool(settings) as pool:
            engine = TransferEngine(pool, policy(max_attempts=100, budget_s=30))
            stop = threading.Event()

            def load() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    outcomes.append(engine.apply(request(1 + i % 9, 1 + (i + 1) % 9, "0.5")))

            threads = [threading.Thread(target=load) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            pg.restart("immediate", downtime_s=0.5)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(60)
        assert len(outcomes) > 10
        assert all(o.status is Status.COMMITTED for o in outcomes)
        assert max(o.attempts for o in outcomes) >= 2
        with connect(settings) as conn:
            report = run_audit(conn)
        assert report.violations == []
        assert report.committed_transfers == len(outcomes)


def test_database_down_raises_retryable_error_within_budget() -> None:
    """With the server gone, a transfer gives up within its budget as DatabaseUnavailable."""
    with EmbeddedPostgres() as pg:
        settings = Settings(
            database_url=pg.url, pool_min_size=1, pool_max_size=1, connect_timeout_s=2
        )
        with connect(settings) as conn:
            migrate(conn, settings.backend)
        reset_accounts(settings, 2, Decimal(10))
        with create_pool(settings) as pool:
            pool.wait()
            pg.stop("immediate")
            engine = TransferEngine(pool, policy(max_attempts=1000, budget_s=1.5))
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as info:
                engine.apply(request())
            elapsed = time.monotonic() - started
        assert info.value.attempts >= 1
        assert elapsed < 10
        pg.start()
        with connect(settings) as conn:
            assert conn.execute("SELECT count(*) FROM transfer_results").fetchone() == (0,)


def test_closed_pool_is_not_retried(settings: Settings) -> None:
    """Using a closed pool is a programming error: it propagates at once, unretried."""
    reset_accounts(settings, 2, Decimal(10))
    pool: ConnectionPool[Any] = create_pool(settings, min_size=0, max_size=1)
    pool.open()
    pool.close()
    sleeps: list[float] = []
    engine = TransferEngine(pool, policy(max_attempts=3), sleep=sleeps.append)
    with pytest.raises(PoolClosed):
        engine.apply(request())
    assert sleeps == []


def test_classify_maps_real_server_errors(server_url: str) -> None:
    """40001/40P01 and OC000/OC001 are conflicts, 57P01 a connection fault, syntax errors
    are neither."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        for sqlstate, fault in [
            ("40001", Fault.CONFLICT),
            ("40P01", Fault.CONFLICT),
            ("OC000", Fault.CONFLICT),  # DSQL's codes as the SQLSTATE itself
            ("OC001", Fault.CONFLICT),
            ("57P01", Fault.CONNECTION),
            ("08006", Fault.CONNECTION),
            ("22012", None),
        ]:
            with pytest.raises(psycopg.Error) as info:
                conn.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '" + sqlstate + "'; END $$"
                )
            assert info.value.sqlstate == sqlstate
            assert classify(info.value) is fault
        with pytest.raises(psycopg.errors.SyntaxError) as syntax:
            conn.execute("SELEC 1")
        assert classify(syntax.value) is None
    closed = psycopg.connect(server_url)
    closed.close()
    with pytest.raises(psycopg.OperationalError) as gone:
        closed.execute("SELECT 1")
    assert classify(gone.value) is Fault.CONNECTION
    assert classify(ValueError("not a database error")) is None


@pytest.mark.parametrize("failures", [1, 2, 5, 40])
def test_backoff_is_full_jitter_under_an_exponential_cap(failures: int) -> None:
    """Sleeps are uniform in [0, min(cap, base * 2**(n-1))]: spread, bounded, growing."""
    retry = policy(base_s=0.01, cap_s=0.1)
    ceiling = min(0.1, 0.01 * 2 ** (failures - 1))
    samples = [retry.backoff_s(failures) for _ in range(2000)]
    assert all(0 <= s <= ceiling for s in samples)
    assert max(samples) > ceiling * 0.9
    assert min(samples) < ceiling * 0.1
