"""The transfer engine against a real PostgreSQL: outcomes, idempotency, retries."""

from __future__ import annotations

import multiprocessing
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.dsql_faults import DsqlFaults
from tests.support import balances, policy
from worker.contract import TransferRequest
from worker.db import connect, create_pool
from worker.engine import TransferEngine
from worker.errors import ConflictRetriesExhausted, RetryableTransferError
from worker.outcomes import Reason, Status, TransferResult
from worker.settings import Settings, Statements


@pytest.fixture(params=list(Statements), ids=[s.value for s in Statements])
def statements(request: pytest.FixtureRequest) -> Statements:
    """Every test here runs with both ways of sending a transfer."""
    return Statements(request.param)


def request(
    payer: int, payee: int, amount: str | Decimal, transfer_id: uuid.UUID | None = None
) -> TransferRequest:
    return TransferRequest(
        transfer_id=transfer_id or uuid.uuid4(),
        payer_id=payer,
        payee_id=payee,
        amount=Decimal(amount),
    )


def stored(settings: Settings, transfer_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with connect(settings) as conn:
        return conn.execute(
            "SELECT status, reason, amount, payer_balance, attempts FROM transfer_results"
            " WHERE transfer_id = %s",
            (transfer_id,),
        ).fetchall()


def audit_violations(settings: Settings) -> list[str]:
    with connect(settings) as conn:
        return run_audit(conn).violations


@pytest.fixture
def ten_accounts(settings: Settings) -> Settings:
    """Accounts 1..10 with 100 each."""
    reset_accounts(settings, 10, Decimal(100))
    return settings


def test_committed_transfer_moves_money_and_records_result(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """A valid transfer debits the payer, credits the payee and stores one committed row."""
    req = request(3, 7, "12.345678")
    result = engine.apply(req)
    assert result.status is Status.COMMITTED
    assert result.reason is None
    assert result.payer_balance == Decimal("87.654322")
    assert result.attempts == 1
    assert result.transaction_ms is not None
    assert result.transaction_ms > 0
    assert not result.duplicate
    after = balances(ten_accounts)
    assert after[3] == Decimal("87.654322")
    assert after[7] == Decimal("112.345678")
    assert stored(ten_accounts, req.transfer_id) == [
        ("committed", None, Decimal("12.345678"), Decimal("87.654322"), 1)
    ]
    assert audit_violations(ten_accounts) == []


@pytest.mark.parametrize(
    ("payer", "payee", "amount", "reason"),
    [
        (1, 99, "1", Reason.PAYEE_NOT_FOUND),
        (99, 1, "1", Reason.PAYER_NOT_FOUND),
        (1, 2, "100.000001", Reason.INSUFFICIENT_FUNDS),
        (4, 4, "1", Reason.SAME_ACCOUNT),
        (1, 2, "0", Reason.INVALID_AMOUNT),
        (1, 2, "-5", Reason.INVALID_AMOUNT),
        (1, 2, "0.0000001", Reason.INVALID_AMOUNT),
        (1, 2, "1000000000000", Reason.INVALID_AMOUNT),
    ],
)
def test_every_rejection_is_recorded_and_moves_nothing(
    ten_accounts: Settings,
    engine: TransferEngine,
    payer: int,
    payee: int,
    amount: str,
    reason: Reason,
) -> None:
    """Each business rule rejects with its reason, records it, and leaves balances alone."""
    before = balances(ten_accounts)
    req = request(payer, payee, amount)
    result = engine.apply(req)
    assert (result.status, result.reason) == (Status.REJECTED, reason)
    assert balances(ten_accounts) == before
    rows = stored(ten_accounts, req.transfer_id)
    assert [(r[0], r[1]) for r in rows] == [("rejected", reason.value)]
    assert audit_violations(ten_accounts) == []


def test_credit_that_would_overflow_is_rejected(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """A payee balance that would exceed numeric(18,6) rejects instead of retrying forever."""
    with connect(ten_accounts) as conn:
        conn.execute("UPDATE accounts SET balance = 999999999999 WHERE id IN (1, 2)")
        conn.commit()
    result = engine.apply(request(1, 2, "500"))
    assert (result.status, result.reason) == (Status.REJECTED, Reason.BALANCE_OVERFLOW)
    assert balances(ten_accounts)[1] == Decimal("999999999999")


def test_unrepresentable_invalid_amount_is_recorded_without_amount(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """An amount numeric(18,6) cannot hold is rejected and stored with a NULL amount."""
    req = request(1, 2, "1E+40")
    assert engine.apply(req).reason is Reason.INVALID_AMOUNT
    assert stored(ten_accounts, req.transfer_id)[0][2] is None
    again = engine.apply(req)
    assert again.reason is Reason.INVALID_AMOUNT
    assert again.duplicate


def test_repeated_transfer_moves_money_once_and_reports_first_result(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """Applying the same transfer_id again returns the first result and changes nothing."""
    req = request(1, 2, "10")
    first = engine.apply(req)
    after_first = balances(ten_accounts)
    for _ in range(3):
        again = engine.apply(req)
        assert again.duplicate
        assert again.status is Status.COMMITTED
        assert again.payer_balance == first.payer_balance
        assert again.completed_at == first.completed_at
    assert balances(ten_accounts) == after_first


def test_first_rejection_wins_even_when_a_retry_could_succeed(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """A rejected transfer_id stays rejected after the payer's balance recovers."""
    req = request(1, 2, "150")
    assert engine.apply(req).reason is Reason.INSUFFICIENT_FUNDS
    engine.apply(request(3, 1, "60"))
    again = engine.apply(req)
    assert (again.reason, again.duplicate) == (Reason.INSUFFICIENT_FUNDS, True)
    assert balances(ten_accounts)[1] == Decimal(160)


@pytest.mark.parametrize(
    "change",
    [{"amount": Decimal("10.01")}, {"payer_id": 3}, {"payee_id": 4}],
)
def test_same_id_with_other_content_is_a_conflicting_duplicate(
    ten_accounts: Settings, engine: TransferEngine, change: dict[str, Any]
) -> None:
    """Reusing a transfer_id for a different transfer is refused; the first row stays."""
    req = request(1, 2, "10")
    engine.apply(req)
    before = balances(ten_accounts)
    clash = engine.apply(req.model_copy(update=change))
    assert (clash.status, clash.reason) == (Status.REJECTED, Reason.CONFLICTING_DUPLICATE)
    assert balances(ten_accounts) == before
    assert stored(ten_accounts, req.transfer_id) == [
        ("committed", None, Decimal(10), Decimal(90), 1)
    ]


def test_same_id_twenty_times_concurrently_moves_money_once(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """Twenty concurrent deliveries of one transfer: one effect, one answer for all."""
    req = request(5, 6, "7.5")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: engine.apply(req), range(20)))
    assert {(r.status, r.payer_balance, r.completed_at) for r in results} == {
        (Status.COMMITTED, Decimal("92.5"), results[0].completed_at)
    }
    assert sum(not r.duplicate for r in results) == 1
    after = balances(ten_accounts)
    assert (after[5], after[6]) == (Decimal("92.5"), Decimal("107.5"))


def test_same_id_with_other_amount_concurrently_is_applied_at_most_once(
    ten_accounts: Settings, engine: TransferEngine
) -> None:
    """Racing deliveries with different amounts: exactly one applies, the rest clash."""
    tid = uuid.uuid4()
    reqs = [request(5, 6, str(1 + i % 2), tid) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(engine.apply, reqs))
    winner = stored(ten_accounts, tid)
    assert len(winner) == 1
    amount = winner[0][2]
    for req, res in zip(reqs, results, strict=True):
        expected = Status.COMMITTED if req.amount == amount else Status.REJECTED
        assert res.status is expected
        if expected is Status.REJECTED:
            assert res.reason is Reason.CONFLICTING_DUPLICATE
    assert balances(ten_accounts)[5] == Decimal(100) - amount


def _apply_in_process(database_url: str, req_json: str, out: Any) -> None:
    settings = Settings(database_url=database_url, pool_min_size=1, pool_max_size=1)
    with create_pool(settings) as pool:
        result = TransferEngine(pool).apply(TransferRequest.model_validate_json(req_json))
    out.put((result.status.value, str(result.payer_balance), result.duplicate))


def test_same_id_from_several_processes_moves_money_once(ten_accounts: Settings) -> None:
    """Separate OS processes racing on one transfer_id still apply it once."""
    req = request(8, 9, "3")
    assert ten_accounts.database_url is not None
    url = ten_accounts.database_url.get_secret_value()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_apply_in_process, args=(url, req.model_dump_json(), out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [out.get(timeout=5) for _ in procs]
    assert {r[:2] for r in results} == {("committed", "97.000000")}
    assert sorted(r[2] for r in results) == [False, True, True, True]
    assert balances(ten_accounts)[8] == Decimal(97)


def bank_run(
    engine: TransferEngine, transfers: int, accounts: int, threads: int, seed: int
) -> tuple[list[TransferResult], list[RetryableTransferError]]:
    """Random transfers between distinct random accounts, as the workshop's load tool."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(transfers):
        payer, payee = rng.sample(range(1, accounts + 1), 2)
        reqs.append(request(payer, payee, f"{rng.randint(1, 1000) / 100:.2f}"))

    def one(req: TransferRequest) -> TransferResult | RetryableTransferError:
        try:
            return engine.apply(req)
        except RetryableTransferError as exc:
            return exc

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(one, reqs))
    results = [o for o in outcomes if isinstance(o, TransferResult)]
    failures = [o for o in outcomes if isinstance(o, RetryableTransferError)]
    return results, failures


def test_bank_sixteen_threads_ten_accounts_conserves_money_and_counts_retries(
    ten_accounts: Settings,
    pool: ConnectionPool[Any],
    statements: Statements,
) -> None:
    """2,000 contended transfers: every one gets an outcome, retries happen, audit is clean."""
    engine = TransferEngine(pool, policy(max_attempts=50, budget_s=60), statements=statements)
    results, failures = bank_run(engine, 2000, 10, 16, seed=7)
    assert failures == []
    assert len(results) == 2000
    assert all(
        r.status is Status.COMMITTED or r.reason is Reason.INSUFFICIENT_FUNDS for r in results
    )
    retries = sum(r.attempts - 1 for r in results)
    assert retries > 0
    with connect(ten_accounts) as conn:
        row = conn.execute("SELECT count(*), sum(attempts - 1) FROM transfer_results").fetchone()
    assert row == (2000, retries)
    assert audit_violations(ten_accounts) == []


def test_bank_with_commit_time_conflicts_conserves_money_and_counts_retries(
    ten_accounts: Settings,
    pool: ConnectionPool[Any],
    dsql_faults: DsqlFaults,
    statements: Statements,
) -> None:
    """DSQL's way of conflicting: a fifth of the COMMITs fail with OC000 after every
    statement succeeded. 1,000 contended transfers still get one outcome each, the
    retries recorded cover every injected conflict, and the audit finds nothing
    half-applied."""
    dsql_faults.conflict_at_commit(0.2)
    engine = TransferEngine(pool, policy(max_attempts=50, budget_s=60), statements=statements)
    results, failures = bank_run(engine, 1000, 10, 16, seed=13)
    dsql_faults.off()
    injected = dsql_faults.raised().commit_conflicts
    assert failures == []
    assert len(results) == 1000
    assert all(
        r.status is Status.COMMITTED or r.reason is Reason.INSUFFICIENT_FUNDS for r in results
    )
    retries = sum(r.attempts - 1 for r in results)
    assert retries >= injected > 100
    with connect(ten_accounts) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT transfer_id), sum(attempts - 1) FROM transfer_results"
        ).fetchone()
    assert row == (1000, 1000, retries)
    assert audit_violations(ten_accounts) == []


def test_bank_without_retry_fails_some_transfers_and_still_conserves_money(
    ten_accounts: Settings,
    pool: ConnectionPool[Any],
    statements: Statements,
) -> None:
    """max_attempts=1 (the workshop's chapter 04): conflicts fail, nothing half-applied."""
    engine = TransferEngine(pool, policy(max_attempts=1), statements=statements)
    results, failures = bank_run(engine, 2000, 10, 16, seed=11)
    assert failures, "16 threads on 10 accounts must conflict"
    assert all(isinstance(f, ConflictRetriesExhausted) and f.attempts == 1 for f in failures)
    assert all(isinstance(f.__cause__, psycopg.errors.SerializationFailure) for f in failures), (
        "ascending-id updates must never deadlock"
    )
    with connect(ten_accounts) as conn:
        recorded = conn.execute("SELECT count(*) FROM transfer_results").fetchone()
    assert recorded == (len(results),)
    assert audit_violations(ten_accounts) == []
