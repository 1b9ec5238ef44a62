"""The hot-account sweep: 16-way concurrency over 2, 10, 100 and 1,000 accounts.

Sixteen runs through moto would take a quarter of an hour (moto is the pipeline's
bottleneck, see :mod:`bench.pipeline`), so the sweep drives the engine directly,
emulating worker processes: each emulated worker is an OS process with its own pool
and :class:`~worker.engine.TransferEngine`, and, like ``python -m worker run``, it
never runs two transfers that share an account at once (an
:class:`~worker.dispatch.scheduler.AccountScheduler` with the consumer's window of two jobs per
executor). "16-way" is the total executor count: 16 threads in one worker, or 8 + 8
in two. Two workers still conflict with each other, which is where retries come from.

A third mode drops the scheduler (2 processes x 8 threads, each thread applying the
next transfer regardless of accounts): independent callers, like the workshop's
parallel Lambda invocations, so every overlap on an account is a conflict.

Retries on is the default policy (``MAX_ATTEMPTS`` 30, the workshop's chapter 05);
retries off is ``MAX_ATTEMPTS=1`` (chapter 04), where a conflict is a failed transfer
(in the product its message would come back from the queue). Every account starts
with 1,000,000 so that rejections for insufficient funds do not blur the picture.

The headline case (10 accounts, 16-way, two workers, retries on) also runs through
the real pipeline: two ``python -m worker run`` processes with
``WORKER_CONCURRENCY=8`` each, fed by ``python -m producer load`` through moto.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import random
import statistics
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from decimal import Decimal
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from bench.processes import SampledWorkers, base_env, producer_load
from bench.server import BenchServer
from producer.load import plan_transfers
from producer.percentiles import percentile
from sandbox.sqs import LocalSqs
from worker.errors import RetryableTransferError

BALANCE = Decimal(1_000_000)
ACCOUNT_COUNTS = (2, 10, 100, 1000)
CONCURRENCY = 16
RETRIES_ON = 30
RETRIES_OFF = 1
PREFETCH = 2
"""Jobs an emulated worker holds per executor, as worker.transport.consumer does."""

Plan = tuple[str, int, int, str]
"""(transfer_id, payer_id, payee_id, amount) as plain values for another process."""
Record = tuple[str, int, float]
"""(outcome, attempts, latency_ms): outcome is committed, rejected or failed."""


@dataclass(frozen=True)
class Mode:
    """How the 16 executors are arranged."""

    name: str
    processes: int
    scheduled: bool

    @property
    def threads(self) -> int:
        """Executors per process."""
        return CONCURRENCY // self.processes


MODES = (
    Mode("1 worker", 1, scheduled=True),
    Mode("2 workers", 2, scheduled=True),
    Mode("2 procs, no scheduler", 2, scheduled=False),
)


def sweep(
    server: BenchServer,
    transfers: int,
    *,
    accounts: tuple[int, ...] = ACCOUNT_COUNTS,
    modes: tuple[Mode, ...] = MODES,
    on_case: Any = None,
) -> list[dict[str, Any]]:
    """Every (accounts, mode, retries on/off) case, in that nesting order."""
    rows = []
    for count, mode, attempts in itertools.product(accounts, modes, (RETRIES_ON, RETRIES_OFF)):
        row = run_case(server, count, mode, max_attempts=attempts, transfers=transfers)
        rows.append(row)
        if on_case is not None:
            on_case(row)
    return rows


def run_case(
    server: BenchServer,
    accounts: int,
    mode: Mode,
    *,
    max_attempts: int,
    transfers: int,
    seed: int = 7,
) -> dict[str, Any]:
    """``transfers`` transfers over ``accounts`` accounts, set up fresh."""
    server.reset(accounts, BALANCE)
    plan: list[Plan] = [
        (str(t.transfer_id), t.payer_id, t.payee_id, str(t.amount))
        for t in plan_transfers(transfers, accounts, random.Random(seed))
    ]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(mode.processes + 1)
    results: ProcessQueue[dict[str, Any]] = context.Queue()
    url = server.endpoint().url()
    processes = [
        context.Process(
            target=emulated_worker,
            kwargs={
                "url": url,
                "plan": plan[i :: mode.processes],
                "threads": mode.threads,
                "scheduled": mode.scheduled,
                "max_attempts": max_attempts,
                "barrier": barrier,
                "results": results,
            },
            daemon=True,
        )
        for i in range(mode.processes)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)
    outputs = [results.get(timeout=900) for _ in processes]
    for process in processes:
        process.join(30)
    errors = [out["error"] for out in outputs if out.get("error")]
    if errors:
        raise RuntimeError(f"emulated worker failed: {errors[0]}")
    records: list[Record] = [(r[0], r[1], r[2]) for out in outputs for r in out["records"]]
    elapsed = max(out["ended"] for out in outputs) - min(out["started"] for out in outputs)
    return {
        "accounts": accounts,
        "mode": mode.name,
        "processes": mode.processes,
        "threads_per_process": mode.threads,
        "scheduled": mode.scheduled,
        "retries": "on" if max_attempts > 1 else "off",
        "max_attempts": max_attempts,
        **summarize(records, elapsed),
    }


def summarize(records: list[Record], elapsed_s: float) -> dict[str, Any]:
    """Goodput, outcome and committed shares, retries, p99 latency of one case."""
    total = len(records)
    committed = sum(1 for outcome, _, _ in records if outcome == "committed")
    failed = sum(1 for outcome, _, _ in records if outcome == "failed")
    retries = [attempts - 1 for _, attempts, _ in records]
    latencies = sorted(latency for _, _, latency in records)
    return {
        "transfers": total,
        "elapsed_s": elapsed_s,
        "goodput_per_s": committed / elapsed_s,
        "committed": committed,
        "committed_pct": 100 * committed / total,
        "rejected": total - committed - failed,
        "failed": failed,
        "with_outcome_pct": 100 * (total - failed) / total,
        "retries_total": sum(retries),
        # Attempts that hit a conflict: retries, plus the last attempt of a failed transfer
        # (the workshop counts those as OC000 errors). Comparable with retries on or off.
        "conflicts_per_transfer": (sum(retries) + failed) / total,
        "retries_per_transfer": sum(retries) / total,
        "retried_pct": 100 * sum(1 for r in retries if r) / total,
        "max_retries": max(retries),
        "latency_ms_p50": statistics.median(latencies),
        "latency_ms_p99": percentile(latencies, 99),
    }


# --- the emulated worker process -----------------------------------------------------


def emulated_worker(
    *,
    url: str,
    plan: list[Plan],
    threads: int,
    scheduled: bool,
    max_attempts: int,
    barrier: Barrier,
    results: ProcessQueue[dict[str, Any]],
) -> None:
    """One worker process: a pool and an engine with ``threads`` executors; puts its
    records (and start/end times on the shared monotonic clock) on ``results``."""
    try:
        results.put(
            _emulate(
                url,
                plan,
                threads=threads,
                scheduled=scheduled,
                max_attempts=max_attempts,
                barrier=barrier,
            )
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        barrier.abort()
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def _emulate(
    url: str,
    plan: list[Plan],
    *,
    threads: int,
    scheduled: bool,
    max_attempts: int,
    barrier: Barrier,
) -> dict[str, Any]:
    import structlog
    from pydantic import SecretStr

    from worker.contract import TransferRequest
    from worker.db import create_pool
    from worker.dispatch.scheduler import AccountScheduler
    from worker.engine import RetryPolicy, TransferEngine
    from worker.settings import Settings

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = Settings(
        database_url=SecretStr(url),
        pool_min_size=threads,
        pool_max_size=threads,
        max_attempts=max_attempts,
    )
    requests = [
        TransferRequest(
            transfer_id=uuid.UUID(tid), payer_id=payer, payee_id=payee, amount=Decimal(amount)
        )
        for tid, payer, payee, amount in plan
    ]
    records: list[Record] = []
    with create_pool(settings, name="emulated-worker") as pool:
        pool.wait()
        engine = TransferEngine(pool, RetryPolicy.from_settings(settings))

        def apply(request: TransferRequest) -> None:
            started = time.perf_counter()
            try:
                result = engine.apply(request)
                outcome, attempts = result.status.value, result.attempts
            except RetryableTransferError as exc:
                outcome, attempts = "failed", exc.attempts
            records.append((outcome, attempts, (time.perf_counter() - started) * 1000))

        barrier.wait(timeout=120)
        started = time.monotonic()
        if scheduled:
            _run_scheduled(requests, threads, apply, AccountScheduler())
        else:
            _run_free(requests, threads, apply)
        ended = time.monotonic()
    return {"started": started, "ended": ended, "records": records}


def _run_scheduled(requests: list[Any], threads: int, apply: Any, scheduler: Any) -> None:
    """The consumer's discipline: at most PREFETCH jobs per executor held, oldest
    runnable first, never two on one account."""
    room = threading.Semaphore(PREFETCH * threads)
    remaining = [len(requests)]
    lock = threading.Lock()
    finished = threading.Event()

    def feed() -> None:
        for request in requests:
            room.acquire()
            scheduler.put(request, {request.payer_id, request.payee_id})

    def execute() -> None:
        while not finished.is_set():
            slot = scheduler.take(timeout=0.05)
            if slot is None:
                continue
            try:
                apply(slot.job)
            finally:
                scheduler.done(slot)
                room.release()
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        finished.set()

    executors = [threading.Thread(target=execute) for _ in range(threads)]
    _join([threading.Thread(target=feed), *executors])


def _run_free(requests: list[Any], threads: int, apply: Any) -> None:
    """Independent callers: each thread applies the next transfer, whatever it touches."""
    source = iter(requests)
    lock = threading.Lock()

    def execute() -> None:
        while True:
            with lock:
                request = next(source, None)
            if request is None:
                return
            apply(request)

    _join([threading.Thread(target=execute) for _ in range(threads)])


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- the headline case through SQS -------------------------------------------------------


@dataclass(frozen=True)
class PipelineCase:
    """The headline case as real processes."""

    accounts: int = 10
    workers: int = 2
    concurrency_per_worker: int = 8
    producer_threads: int = 4
    max_backlog: int = 50


def through_sqs(
    server: BenchServer,
    sqs: LocalSqs,
    workdir: Path,
    transfers: int,
    case: PipelineCase | None = None,
) -> dict[str, Any]:
    """Two worker processes (8 executors each) behind moto, ``producer load --wait``."""
    case = case or PipelineCase()
    server.reset(case.accounts, BALANCE)
    queues = sqs.create_queues(f"contention-{uuid.uuid4().hex[:8]}")
    env = base_env(server.endpoint().url(), sqs, queues)
    workers = SampledWorkers.start(
        env, workdir, case.workers, worker_concurrency=case.concurrency_per_worker
    )
    try:
        load = producer_load(
            env,
            iters=transfers,
            threads=case.producer_threads,
            accounts=case.accounts,
            max_backlog=case.max_backlog,
            wait=True,
        )
    finally:
        codes = workers.stop()
    sent = load["sent"]
    with_outcome = load["committed"] + load["rejected"]
    transaction = load["transaction_ms"] or {}
    throughput = load["throughput_per_s"] or 0.0
    return {
        **asdict(case),
        "transfers": sent,
        "worker_exit_codes": codes,
        "with_outcome_pct": 100 * with_outcome / sent if sent else None,
        "committed_pct": load["committed_pct"],
        "failed": load["failed"],
        "retries_per_transfer": load["retries"]["per_transfer"],
        "retried_pct": load["retries"]["retried_pct"],
        "max_retries": load["retries"]["max"],
        "transaction_ms_p99": transaction.get("p99"),
        "end_to_end_ms_p99": (load["end_to_end_ms"] or {}).get("p99"),
        "throughput_per_s": throughput,
        # Little's law: transfers in flight on average = arrival rate x time in the engine.
        "mean_in_flight": throughput * (transaction.get("avg") or 0.0) / 1000,
        "worker_peak_rss_mib": max(
            s.summary()["peak_mib"] or 0.0 for s in workers.samplers.values()
        ),
    }
