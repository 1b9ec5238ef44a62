"""DSQL's failure modes on the embedded PostgreSQL (sandbox.dsql_faults), and the engine
living through each: conflicts at COMMIT, OC001 at a statement, the row limit, and
connections closed at their lifetime cap."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.dsql_faults import OC000_MESSAGE, OC001_MESSAGE, DsqlFaults, LifetimeCap
from tests.support import policy
from worker.contract import TransferRequest
from worker.db import connect, create_pool
from worker.engine import TransferEngine
from worker.errors import Fault, classify
from worker.outcomes import Status, TransferResult
from worker.settings import Settings, Statements


@pytest.fixture(params=list(Statements), ids=[s.value for s in Statements])
def statements(request: pytest.FixtureRequest) -> Statements:
    """Every test here runs with both ways of sending a transfer."""
    return Statements(request.param)


def request(payer: int, payee: int, amount: str = "1") -> TransferRequest:
    return TransferRequest(
        transfer_id=uuid.uuid4(), payer_id=payer, payee_id=payee, amount=Decimal(amount)
    )


def url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url.get_secret_value()


@pytest.fixture
def funded(settings: Settings) -> Settings:
    reset_accounts(settings, 10, Decimal(100))
    return settings


def audit_ok(settings: Settings) -> int:
    """Asserts the audit is clean; returns the number of committed transfers."""
    with connect(settings) as conn:
        report = run_audit(conn)
    assert report.violations == []
    return report.committed_transfers


def test_commit_conflict_comes_at_commit_after_every_statement_succeeded(
    funded: Settings, dsql_faults: DsqlFaults
) -> None:
    """OC000 is raised by COMMIT, as 40001 with DSQL's message, and nothing is applied."""
    dsql_faults.conflict_at_commit(next_commits=1)
    with psycopg.connect(url(funded), autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        rows = conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1 RETURNING id")
        assert rows.fetchall() == [(1,)]
        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 2")
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            conn.execute("COMMIT")
        assert info.value.sqlstate == "40001"
        assert info.value.diag.message_primary == OC000_MESSAGE
        assert classify(info.value) is Fault.CONFLICT
        # Armed for one commit only: the next one goes through.
        conn.execute("BEGIN")
        conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
        conn.execute("COMMIT")
    assert dsql_faults.raised().commit_conflicts == 1
    with connect(funded) as conn:
        balances = dict(conn.execute("SELECT id, balance FROM accounts WHERE id < 3").fetchall())
    assert balances == {1: Decimal(99), 2: Decimal(100)}


def test_commit_conflict_share_is_decided_once_per_transaction(
    funded: Settings, dsql_faults: DsqlFaults
) -> None:
    """With a share of 0.5, about half the writing transactions fail, however many rows
    each wrote; read-only transactions never do."""
    dsql_faults.conflict_at_commit(0.5)
    failed = 0
    with psycopg.connect(url(funded), autocommit=True) as conn:
        for _ in range(200):
            conn.execute("BEGIN")
            conn.execute("UPDATE accounts SET balance = balance WHERE id <= 5")
            try:
                conn.execute("COMMIT")
            except psycopg.errors.SerializationFailure:
                failed += 1
        for _ in range(20):
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM accounts")
            conn.execute("COMMIT")
    assert 60 <= failed <= 140
    assert dsql_faults.raised().commit_conflicts == failed


@pytest.mark.parametrize("sqlstate", ["40001", "OC001"])
def test_oc001_fails_the_statement_and_is_a_conflict(
    funded: Settings, dsql_faults: DsqlFaults, sqlstate: str
) -> None:
    """OC001 at a statement, as 40001 with DSQL's message or as the SQLSTATE itself."""
    dsql_faults.conflict_at_statement(1.0, sqlstate=sqlstate)
    with psycopg.connect(url(funded)) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute("UPDATE accounts SET balance = balance WHERE id = 1")
    assert info.value.sqlstate == sqlstate
    assert info.value.diag.message_primary == OC001_MESSAGE
    assert classify(info.value) is Fault.CONFLICT


def test_row_limit_counts_every_row_the_transaction_mutates(
    funded: Settings, dsql_faults: DsqlFaults
) -> None:
    """54000 once a transaction's inserted + updated + deleted rows pass the limit."""
    dsql_faults.limit_rows(6)
    with psycopg.connect(url(funded)) as conn:
        conn.execute("UPDATE accounts SET balance = balance WHERE id <= 6")
        conn.commit()  # exactly at the limit
        conn.execute("UPDATE accounts SET balance = balance WHERE id <= 4")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute("DELETE FROM accounts WHERE id > 7")  # 4 + 3 rows
        conn.rollback()
        conn.execute(
            "INSERT INTO accounts (id, balance) SELECT g, 1 FROM generate_series(11, 16) AS g"
        )
        conn.commit()
    assert info.value.sqlstate == "54000"
    assert dsql_faults.raised().row_limits == 1
    dsql_faults.limit_rows(None)
    with connect(funded) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (16,)


def test_engine_retries_commit_time_conflicts_without_applying_twice(
    funded: Settings, engine: TransferEngine, dsql_faults: DsqlFaults
) -> None:
    """A transfer whose first two COMMITs conflict commits on attempt 3, once."""
    dsql_faults.conflict_at_commit(next_commits=2)
    result = engine.apply(request(1, 2, "5"))
    assert (result.status, result.attempts) == (Status.COMMITTED, 3)
    assert dsql_faults.raised().commit_conflicts == 2
    assert audit_ok(funded) == 1


def test_engine_retries_oc001_at_statements(
    funded: Settings, engine: TransferEngine, dsql_faults: DsqlFaults
) -> None:
    """With a fifth of the writes failing with OC001, every transfer still commits once."""
    dsql_faults.conflict_at_statement(0.2, sqlstate="OC001")
    results = [engine.apply(request(1 + i % 9, 2 + i % 9, "0.5")) for i in range(40)]
    dsql_faults.off()
    assert all(r.status is Status.COMMITTED for r in results)
    assert sum(r.attempts - 1 for r in results) >= dsql_faults.raised().statement_conflicts > 0
    assert audit_ok(funded) == 40


def test_pool_recovers_from_connections_closed_at_their_lifetime_cap(
    funded: Settings,
    lifetime_cap: LifetimeCap,
    statements: Statements,
) -> None:
    """The server closes every connection at 0.5 s of age while transfers run from three
    threads for 2 s: every transfer commits once, on fresh connections."""
    results: list[TransferResult] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with create_pool(funded, min_size=3, max_size=3) as pool:
        engine = TransferEngine(pool, policy(max_attempts=50, budget_s=10), statements=statements)

        def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    results.append(engine.apply(request(1 + worker * 3, 2 + worker * 3, "0.01")))
                except BaseException as exc:
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(30)
        after = engine.apply(request(9, 10, "0.01"))
    assert errors == []
    assert lifetime_cap.terminated >= 3, "the connections outlived 0.5 s several times"
    assert len(results) > 30
    assert all(r.status is Status.COMMITTED for r in [*results, after])
    assert max(r.attempts for r in results) >= 2, "some transfer met a closed connection"
    assert audit_ok(funded) == len(results) + 1
