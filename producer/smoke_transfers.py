"""The smoke test's transfers: a contended workload with every outcome, each checked.

:func:`workload` draws a few hundred transfers for the :data:`ACCOUNTS` accounts that
:func:`producer.smoke.run_smoke` sets up: crossing pairs on hot accounts (conflicts on
DSQL, row locks on PostgreSQL), every kind of rejection, exact duplicates and a
conflicting duplicate, each with the outcome it must get. :func:`transfer_steps`
applies them from several threads at once and checks every outcome;
:func:`round_trip_step` measures round trips per committed transfer. Each returns
report steps (:data:`Step`) for :class:`producer.smoke.SmokeReport`.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from producer.percentiles import latency_summary
from worker.contract import TransferRequest
from worker.engine import TransferEngine
from worker.outcomes import Reason, Status, TransferResult
from worker.settings import Statements

ACCOUNTS = 10
BALANCE = Decimal(10_000)
"""The smoke test's ledger: accounts 1..ACCOUNTS with BALANCE each."""
LOOPBACK_RTT_S = 0.0002
"""Below this a round trip is local: the latency ratio would measure CPU, not the wire."""
MISSING = 2_000_000_000
"""An account id that setup never creates."""

Step = tuple[str, str, list[str]]
"""A step of the report: its name, what it found, and its problems (none: ok)."""


@dataclass(frozen=True)
class Expected:
    """A request and the outcome it must get."""

    request: TransferRequest
    status: Status
    reason: Reason | None = None
    duplicate: bool = False


def request(payer: int, payee: int, amount: Decimal | str) -> TransferRequest:
    """A fresh transfer request."""
    return TransferRequest(
        transfer_id=uuid.uuid4(), payer_id=payer, payee_id=payee, amount=Decimal(amount)
    )


def workload(rng: random.Random, transfers: int) -> list[Expected]:
    """Contended transfers, each kind of rejection, duplicates, a conflicting duplicate."""
    work: list[Expected] = []
    for i in range(transfers):
        # Crossing pairs on three hot accounts: A->B next to B->A.
        payer, payee = (1, 2) if i % 3 == 0 else (2, 1) if i % 3 == 1 else (3, rng.randint(1, 2))
        if i % 4 == 3:
            payer, payee = rng.sample(range(1, ACCOUNTS + 1), 2)
        amount = Decimal(rng.randint(1, 500)) / 100
        work.append(Expected(request(payer, payee, amount), Status.COMMITTED))
    rejections = [
        (request(4, 5, BALANCE * 10), Reason.INSUFFICIENT_FUNDS),
        (request(MISSING, 5, "1"), Reason.PAYER_NOT_FOUND),
        (request(5, MISSING, "1"), Reason.PAYEE_NOT_FOUND),
        (request(6, 6, "1"), Reason.SAME_ACCOUNT),
        (request(6, 7, "0"), Reason.INVALID_AMOUNT),
        (request(6, 7, "0.0000001"), Reason.INVALID_AMOUNT),
    ]
    for _ in range(3):
        work += [Expected(r, Status.REJECTED, reason) for r, reason in rejections]
        rejections = [(request(r.payer_id, r.payee_id, r.amount), why) for r, why in rejections]
    # Repeats of some requests, sent alongside the originals.
    originals = rng.sample(work, 20)
    work += [Expected(e.request, e.status, e.reason, duplicate=True) for e in originals]
    rng.shuffle(work)
    first = next(e.request for e in work if e.status is Status.COMMITTED)
    conflicting = first.model_copy(update={"amount": first.amount + 1})
    work.append(Expected(conflicting, Status.REJECTED, Reason.CONFLICTING_DUPLICATE, True))
    return work


def transfer_steps(
    pool: Any, work: list[Expected], threads: int, statements: Statements
) -> list[Step]:
    """Apply ``work`` from ``threads`` threads at once (the conflicting duplicate last,
    after its original) with the engine sending ``statements``, and check every outcome:
    the ``transfers``, ``retries`` and ``latency ms`` steps, each tagged with the variant.
    A statement the server refuses raises (psycopg's error)."""
    engine = TransferEngine(pool, statements=statements)
    tag = f" [{statements.value}]"

    def apply(expected: Expected) -> tuple[Expected, TransferResult, float]:
        started = time.perf_counter()
        result = engine.apply(expected.request)
        return expected, result, (time.perf_counter() - started) * 1000

    started = time.monotonic()
    # The conflicting duplicate must follow its original: run it last.
    with ThreadPoolExecutor(threads) as executor:
        done = list(executor.map(apply, work[:-1]))
    done.append(apply(work[-1]))
    elapsed = time.monotonic() - started

    problems, kinds = [], Counter[str]()
    for expected, result, _ms in done:
        kind = result.reason.value if result.reason else result.status.value
        conflicting = result.reason is Reason.CONFLICTING_DUPLICATE
        kinds["duplicate" if result.duplicate and not conflicting else kind] += 1
        if (result.status, result.reason) != (expected.status, expected.reason):
            problems.append(
                f"{expected.request.transfer_id}: {result.status}/{result.reason}, "
                f"expected {expected.status}/{expected.reason}"
            )
    # A duplicate may be the copy that ran first; per id, exactly one first outcome.
    firsts = Counter(e.request.transfer_id for e, r, _ in done if not r.duplicate)
    problems += [f"{tid}: {n} first outcomes" for tid, n in firsts.items() if n != 1]
    retries = [r.attempts - 1 for _, r, _ in done]
    latency = latency_summary(ms for _, r, ms in done if r.committed and not r.duplicate)
    return [
        (
            "transfers" + tag,
            f"{len(done)} in {elapsed:.2f} s from {threads} threads: "
            + " ".join(f"{k}={v}" for k, v in sorted(kinds.items())),
            problems,
        ),
        (
            "retries" + tag,
            f"total={sum(retries)} max={max(retries)} per_transfer={sum(retries) / len(done):.3f}",
            [],
        ),
        (
            "latency ms" + tag,
            "no committed transfer"
            if latency is None
            else f"committed p50={latency.p50:.2f} p99={latency.p99:.2f} max={latency.max:.2f}",
            [],
        ),
    ]


def round_trip_step(pool: Any, statements: Statements) -> Step:
    """Median uncontended transfer time over the median round trip, on one connection."""
    engine = TransferEngine(pool, statements=statements)
    name = f"round trips [{statements.value}]"
    pings, transfers = [], []
    with pool.connection() as conn:
        for _ in range(30):
            started = time.perf_counter()
            conn.execute("SELECT 1")
            pings.append(time.perf_counter() - started)
    for _ in range(30):
        request = TransferRequest(
            transfer_id=uuid.uuid4(), payer_id=8, payee_id=9, amount=Decimal("0.01")
        )
        started = time.perf_counter()
        engine.apply(request)
        transfers.append(time.perf_counter() - started)
    rtt, transfer = statistics.median(pings), statistics.median(transfers)
    timing = f"transfer p50 {transfer * 1000:.2f} ms, SELECT 1 p50 {rtt * 1000:.2f} ms"
    if rtt < LOOPBACK_RTT_S:
        # On loopback client CPU, not the network, sets the time: the ratio means
        # nothing (tests/test_round_trips.py counts them on the wire instead).
        return name, f"not measurable on loopback ({timing})", []
    return name, f"~{transfer / rtt:.1f} per committed transfer ({timing})", []


def batch_step(pool: Any) -> Step:
    """Four transfers on disjoint accounts through the batch statement (TRANSFER_BATCH):
    two commit, two are rejected, each with its own outcome. A server that refuses the
    statement is reported, not failed: the worker then applies each transfer alone and
    turns batching off by itself."""
    engine = TransferEngine(pool)

    work = [
        Expected(request(4, 5, "1"), Status.COMMITTED),
        Expected(request(6, 7, "1"), Status.COMMITTED),
        Expected(request(8, 9, BALANCE * 10), Status.REJECTED, Reason.INSUFFICIENT_FUNDS),
        Expected(request(10, MISSING, "1"), Status.REJECTED, Reason.PAYEE_NOT_FOUND),
    ]
    batched = engine.apply_batch([(e.request, None) for e in work])
    if batched.fell_back:
        return "batch", "refused by this server: the worker applies one transfer at a time", []
    problems = [
        f"{e.request.transfer_id}: {got}, expected {e.status}/{e.reason}"
        for e, got in zip(work, batched.outcomes, strict=True)
        if not isinstance(got, TransferResult) or (got.status, got.reason) != (e.status, e.reason)
    ]
    return "batch", f"{len(work)} transfers in one statement, each its own outcome", problems
