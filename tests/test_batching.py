"""Batched commits (TRANSFER_BATCH): k transfers on disjoint accounts in one statement,
each with its own outcome, against a real PostgreSQL; the fallback when a batch
fails; which transfers the dispatcher lets share a statement."""

from __future__ import annotations

import random
import threading
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from producer.accounts import reset_accounts
from producer.audit import run_audit
from sandbox.dsql_faults import DsqlFaults
from sandbox.sqs import LocalSqs, Queues
from tests.support import (
    balances,
    body,
    poison_payer,
    policy,
    queue_total,
    result_count,
    running_worker,
    send,
    wait_for,
)
from worker.contract import AMOUNT_LIMIT, TransferRequest, encode_body
from worker.db import connect
from worker.dispatch import Action, Batching, Dispatcher, Message, Metrics, Verdict
from worker.dispatch.batching import HotAccounts
from worker.engine import TransferEngine
from worker.engine import retry as retry_module
from worker.errors import ConflictRetriesExhausted, Fault
from worker.outcomes import Reason, Status, TransferResult
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings, Statements


def request(
    payer: int, payee: int, amount: str, transfer_id: uuid.UUID | None = None
) -> TransferRequest:
    return TransferRequest(
        transfer_id=transfer_id or uuid.uuid4(), payer_id=payer, payee_id=payee,
        amount=Decimal(amount),
    )  # fmt: skip


def audit_clean(settings: Settings) -> int:
    """Asserts the audit finds nothing; the number of committed transfers."""
    with connect(settings) as conn:
        report = run_audit(conn)
    assert report.violations == []
    return report.committed_transfers


@pytest.fixture
def funded(settings: Settings) -> Settings:
    """Accounts 1..40 with 100 each."""
    reset_accounts(settings, 40, Decimal(100))
    return settings


def test_a_batch_records_every_outcome_and_a_rejection_rolls_back_nothing(
    funded: Settings, engine: TransferEngine
) -> None:
    """One statement, every outcome the single transfer has: the committed ones move
    money, each rejection is recorded with its reason, a duplicate reports the
    earlier result, and no rejection undoes the others."""
    with connect(funded) as conn:
        conn.execute("UPDATE accounts SET balance = %s WHERE id = 14", (AMOUNT_LIMIT - 1,))
    earlier = request(20, 21, "4")
    first = engine.apply(earlier)
    items = [
        request(1, 2, "10"),
        request(3, 4, "1000"),  # insufficient_funds
        request(5, 999, "1"),  # payee_not_found
        request(998, 6, "1"),  # payer_not_found
        request(7, 7, "1"),  # same_account
        request(8, 9, "0"),  # invalid_amount
        request(13, 14, "2"),  # balance_overflow
        request(20, 21, "4", earlier.transfer_id),  # a redelivery: the earlier result
        request(22, 23, "99.5"),
    ]
    batched = engine.apply_batch([(item, None) for item in items])
    assert not batched.fell_back
    outcomes = batched.outcomes
    assert all(isinstance(o, TransferResult) for o in outcomes)
    got = [(o.status, o.reason) for o in outcomes if isinstance(o, TransferResult)]
    assert got == [
        (Status.COMMITTED, None),
        (Status.REJECTED, Reason.INSUFFICIENT_FUNDS),
        (Status.REJECTED, Reason.PAYEE_NOT_FOUND),
        (Status.REJECTED, Reason.PAYER_NOT_FOUND),
        (Status.REJECTED, Reason.SAME_ACCOUNT),
        (Status.REJECTED, Reason.INVALID_AMOUNT),
        (Status.REJECTED, Reason.BALANCE_OVERFLOW),
        (Status.COMMITTED, None),
        (Status.COMMITTED, None),
    ]
    assert [o.duplicate for o in outcomes if isinstance(o, TransferResult)] == [
        False, False, False, False, False, False, False, True, False,
    ]  # fmt: skip
    again = outcomes[7]
    assert isinstance(again, TransferResult)
    assert (again.payer_balance, again.completed_at) == (first.payer_balance, first.completed_at)
    committed = outcomes[0]
    assert isinstance(committed, TransferResult)
    assert committed.payer_balance == Decimal(90)
    money = balances(funded)
    assert (money[1], money[2], money[22], money[23]) == (90, 110, Decimal("0.5"), Decimal("199.5"))
    assert (money[3], money[4], money[13], money[14]) == (100, 100, 100, AMOUNT_LIMIT - 1)
    with connect(funded) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT transfer_id), max(attempts) FROM transfer_results"
        ).fetchone()
    assert rows == (len(items), len(items), 1)  # the redelivery added no row


def test_a_batch_that_conflicts_at_commit_runs_its_transfers_alone(
    funded: Settings, engine: TransferEngine, dsql_faults: DsqlFaults
) -> None:
    """DSQL reports a conflict at COMMIT: the whole batch is unapplied, each transfer
    then commits on its own, and its recorded attempts count the batch."""
    dsql_faults.conflict_at_commit(next_commits=1)
    items = [request(2 * i + 1, 2 * i + 2, "1") for i in range(6)]
    batched = engine.apply_batch([(item, None) for item in items])
    assert dsql_faults.raised().commit_conflicts == 1
    assert batched.fell_back
    assert batched.fault is Fault.CONFLICT
    assert [o.status for o in batched.outcomes if isinstance(o, TransferResult)] == [
        Status.COMMITTED
    ] * 6
    assert {o.attempts for o in batched.outcomes if isinstance(o, TransferResult)} == {2}
    assert audit_clean(funded) == 6


def test_without_retries_a_failed_batch_fails_its_transfers_for_redelivery(
    funded: Settings, pool: ConnectionPool[Any], dsql_faults: DsqlFaults
) -> None:
    """MAX_ATTEMPTS=1 means no retry: the batch was the attempt, nothing is applied,
    and each transfer comes back as a retryable failure (redelivered, not lost)."""
    engine = TransferEngine(pool, policy(max_attempts=1))
    dsql_faults.conflict_at_commit(next_commits=1)
    batched = engine.apply_batch([(request(1, 2, "1"), None), (request(3, 4, "1"), None)])
    assert all(isinstance(o, ConflictRetriesExhausted) for o in batched.outcomes)
    assert audit_clean(funded) == 0


def test_a_refused_batch_statement_falls_back_without_using_an_attempt(
    funded: Settings, engine: TransferEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses the batch statement (0A000, as a DSQL without ``unnest``
    of arrays would answer) costs one round trip: every transfer then runs as the
    single statement, first attempt, and none goes towards the DLQ."""

    def refused(*_args: object) -> list[TransferResult | None]:
        raise pg_errors.FeatureNotSupported("unnest of arrays is not supported")

    monkeypatch.setattr(retry_module, "batch", refused)
    batched = engine.apply_batch([(request(1, 2, "1"), None), (request(3, 4, "1"), None)])
    assert batched.fell_back
    assert batched.refused
    assert [(o.status, o.attempts) for o in batched.outcomes if isinstance(o, TransferResult)] == [
        (Status.COMMITTED, 1),
        (Status.COMMITTED, 1),
    ]


def test_a_poison_transfer_in_a_batch_fails_alone(funded: Settings, engine: TransferEngine) -> None:
    """A transfer that makes the database raise an unexpected error (a trigger here)
    fails the batch statement; its neighbours then commit on their own and only it
    comes back as an error, for redelivery. The server did not refuse the statement,
    so batching stays on."""
    poison_payer(funded, 7)
    batched = engine.apply_batch(
        [(request(1, 2, "1"), None), (request(7, 8, "1"), None), (request(3, 4, "1"), None)]
    )
    assert batched.fell_back
    assert not batched.refused
    first, poisoned, last = batched.outcomes
    assert isinstance(first, TransferResult)
    assert isinstance(last, TransferResult)
    assert (first.status, first.attempts, last.status) == (Status.COMMITTED, 2, Status.COMMITTED)
    assert isinstance(poisoned, psycopg.errors.InternalError_)
    assert audit_clean(funded) == 2


def test_a_batch_must_not_hold_one_transfer_id_twice(
    funded: Settings, engine: TransferEngine
) -> None:
    """Two rows of one id would both match its one recorded result and both move money:
    the engine refuses such a batch outright (the dispatcher never builds one)."""
    twice = uuid.uuid4()
    with pytest.raises(ValueError, match="transfer_id twice"):
        engine.apply_batch([(request(1, 2, "1", twice), None), (request(3, 4, "1", twice), None)])
    assert audit_clean(funded) == 0


# --- which transfers share a statement ---------------------------------------------------


def message(
    payer: int, payee: int, *, group: str | None = None, transfer_id: uuid.UUID | None = None
) -> Message:
    tid = transfer_id or uuid.uuid4()
    return Message(
        f"m-{tid}", encode_body(payer, payee, Decimal(1), tid), f"r-{tid}", group_id=group
    )


def batching_dispatcher(engine: TransferEngine, size: int = 4) -> Dispatcher:
    return Dispatcher(
        engine, Metrics(emit=lambda _line: None), RedeliverySchedule(), Batching(size, 60.0)
    )


def payers(slots: list[Any]) -> list[int]:
    return [slot.job.request.payer_id for slot in slots]


def test_take_batch_takes_disjoint_jobs_up_to_the_size_in_arrival_order(
    engine: TransferEngine,
) -> None:
    """Jobs sharing an account with an earlier one wait (they would not be disjoint),
    and a batch stops at TRANSFER_BATCH."""
    dispatcher = batching_dispatcher(engine, size=3)
    for payer, payee in [(1, 2), (2, 3), (4, 5), (6, 7), (8, 9)]:
        dispatcher.admit(message(payer, payee))
    first = dispatcher.take_batch(timeout=0.1)
    assert payers(first) == [1, 4, 6]
    # (2, 3) still waits for (1, 2): the scheduler's order rule holds inside a batch.
    assert payers(dispatcher.take_batch(timeout=0.1)) == [8]


def test_fifo_messages_duplicates_and_hot_accounts_run_alone(engine: TransferEngine) -> None:
    """What never shares a statement: a FIFO message, a second delivery of an id already
    in the batch, and a transfer on an account that conflicted recently."""
    dispatcher = batching_dispatcher(engine, size=10)
    dispatcher._hot.mark([30])
    twice = uuid.uuid4()
    dispatcher.admit(message(1, 2))
    dispatcher.admit(message(3, 4, group="g"))
    dispatcher.admit(message(5, 6, transfer_id=twice))
    dispatcher.admit(message(7, 8, transfer_id=twice))
    dispatcher.admit(message(30, 31))
    dispatcher.admit(message(9, 10))
    assert payers(dispatcher.take_batch(timeout=0.1)) == [1, 5, 9]
    rest = [payers(dispatcher.take_batch(timeout=0.1)) for _ in range(3)]
    assert sorted(rest) == [[3], [7], [30]]
    assert dispatcher.take_batch(timeout=0.05) == []


def test_hot_accounts_cool_down_after_the_window() -> None:
    now = [100.0]
    hot = HotAccounts(2.0, clock=lambda: now[0])
    hot.mark([1, 2])
    assert hot.any_hot(2, 9)
    assert not hot.any_hot(3, 4)
    now[0] += 2.5
    assert not hot.any_hot(1, 2)


def test_a_conflicted_batch_makes_its_accounts_hot(
    funded: Settings, engine: TransferEngine, dsql_faults: DsqlFaults
) -> None:
    """After a batch fell back on a conflict its accounts run alone for the window, so
    one hot account cannot make every batch it joins fail again."""
    dispatcher = batching_dispatcher(engine, size=4)
    for i in range(4):
        dispatcher.admit(message(2 * i + 1, 2 * i + 2))
    slots = dispatcher.take_batch(timeout=0.1)
    assert len(slots) == 4
    dsql_faults.conflict_at_commit(next_commits=1)
    verdicts = dispatcher.run_all(slots)
    assert [v.action for v in verdicts] == [Action.ACK] * 4
    for i in range(4):
        dispatcher.admit(message(2 * i + 1, 20 + i))
    dispatcher.admit(message(30, 31))
    dispatcher.admit(message(32, 33))
    assert [len(dispatcher.take_batch(timeout=0.1)) for _ in range(5)] == [1, 1, 1, 1, 2]


def test_batches_from_two_workers_on_few_accounts_conserve_money(
    settings: Settings, pool: ConnectionPool[Any]
) -> None:
    """Two dispatchers (two worker processes' worth) batching 2,000 transfers over 30
    accounts with 3 executors each: they conflict with each other all the time (real
    PostgreSQL serialization failures inside the batch statement). Every transfer
    gets exactly one outcome, money is conserved, and batches did form."""
    reset_accounts(settings, 30, Decimal(100))
    engine = TransferEngine(pool, policy(max_attempts=60, budget_s=60))
    rng = random.Random(5)
    verdicts: list[Verdict] = []
    sizes: list[int] = []
    lock = threading.Lock()

    def executor(dispatcher: Dispatcher) -> None:
        while slots := dispatcher.take_batch(timeout=0.2):
            done = dispatcher.run_all(slots)
            with lock:
                verdicts.extend(done)
                sizes.append(len(slots))

    dispatchers = [batching_dispatcher(engine, size=8) for _ in range(2)]
    for index in range(2000):
        payer, payee = rng.sample(range(1, 31), 2)
        dispatchers[index % 2].admit(message(payer, payee))
    threads = [threading.Thread(target=executor, args=(d,)) for d in dispatchers for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(verdicts) == 2000
    assert {v.action for v in verdicts} == {Action.ACK}
    assert max(sizes) > 1
    assert audit_clean(settings) == sum(
        1 for v in verdicts if v.result is not None and v.result.status is Status.COMMITTED
    )
    assert sum(balances(settings).values()) == 30 * 100
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT transfer_id), max(attempts) FROM transfer_results"
        ).fetchone()
    assert row is not None
    assert row[0] == 2000
    assert row[1] > 1  # the two workers did conflict: some batches fell back


def test_the_consumer_batches_cold_transfers_end_to_end(
    sqs_settings: Settings, local_sqs: LocalSqs, queues: Queues
) -> None:
    """The container worker with TRANSFER_BATCH=8 on 400 accounts: transfers share
    statements (their ``transfer`` lines say ``batch`` > 1), every one is recorded
    once and deleted, and the audit is clean."""
    reset_accounts(sqs_settings, 400, Decimal(100))
    settings = sqs_settings.model_copy(update={"transfer_batch": 8, "pool_max_size": 2})
    rng = random.Random(3)
    bodies = [body(*rng.sample(range(1, 401), 2), "1.5") for _ in range(300)]
    send(local_sqs, queues.queue_url, bodies)
    with structlog.testing.capture_logs() as logs, running_worker(settings):
        wait_for(lambda: result_count(settings) == 300)
        wait_for(lambda: queue_total(local_sqs, queues.queue_url) == 0)
    assert audit_clean(settings) == 300
    batches = [line["batch"] for line in logs if line["event"] == "transfer"]
    assert len(batches) == 300
    assert max(batches) > 1


def test_the_documented_sql_variant_does_not_batch(settings: Settings) -> None:
    """The batch statement writes inside WITH, which the user guide does not document:
    with ENGINE_STATEMENTS=pipelined the worker applies one transfer at a time."""
    pipelined = {"engine_statements": Statements.PIPELINED, "transfer_batch": 8}
    chosen = settings.model_copy(update=pipelined)
    assert Batching.from_settings(chosen).size == 1
    assert Batching.from_settings(settings.model_copy(update={"transfer_batch": 8})).size == 8
