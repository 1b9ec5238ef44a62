"""Transfer engine throughput without SQS: N threads calling ``TransferEngine.apply``.

Each thread applies transfers between random distinct accounts of
:data:`ACCOUNTS` (uncontended: two of 16 threads rarely pick the same account) through
one pool of N connections, the way a worker's executors do. Committed transfers are
counted over a fixed window after a warm-up, so connection set-up and the first
statements' planning are not in the figure.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bench.cpu import own_cpu_s, postgres_cpu_s
from producer.load import plan_transfers
from producer.percentiles import percentile
from worker.contract import TransferRequest
from worker.db import create_pool
from worker.engine import RetryPolicy, TransferEngine
from worker.outcomes import Status, TransferResult
from worker.settings import Settings

ACCOUNTS = 100_000
ENDLESS = 10**12
"""Transfers planned per thread: more than any window uses (drawn lazily)."""


@dataclass(frozen=True)
class EngineRun:
    """One timed window at one concurrency."""

    concurrency: int
    duration_s: float
    committed: int
    tps: float
    p50_ms: float
    p99_ms: float
    retries: int
    """Extra attempts (conflicts) during the window: 0 expected on 100,000 accounts."""
    client_cpu_us: float
    """CPU of this process per committed transfer (all its threads) during the window."""
    server_cpu_us: float | None
    """CPU of the PostgreSQL server per committed transfer, when its data dir is known."""


def run_engine(
    settings: Settings,
    concurrency: int,
    *,
    duration_s: float,
    warmup_s: float,
    accounts: int = ACCOUNTS,
    seed: int = 0,
    pg_data_dir: Path | None = None,
    connection_kwargs: dict[str, Any] | None = None,
    batch: int = 1,
) -> EngineRun:
    """Apply transfers from ``concurrency`` threads for ``warmup_s + duration_s``;
    count what completed inside the last ``duration_s``. ``connection_kwargs`` are
    added to the pool's ``psycopg.connect`` arguments (``prepare_threshold``, say).
    ``batch`` > 1: each thread applies ``batch`` transfers on disjoint accounts at a
    time through ``apply_batch``, as an executor with TRANSFER_BATCH does; latency is
    then the batch's, each of its transfers counted."""
    stop = threading.Event()
    done: list[list[tuple[float, float, int, bool]]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []

    pool = create_pool(settings, min_size=concurrency, max_size=concurrency, name="bench")
    if connection_kwargs:
        assert isinstance(pool.kwargs, dict)
        pool.kwargs.update(connection_kwargs)
    with pool:
        pool.wait()
        engine = TransferEngine(pool, RetryPolicy.from_settings(Settings()))

        def work(index: int) -> None:
            mine = done[index]
            transfers = plan_transfers(ENDLESS, accounts, random.Random(seed * 1000 + index))
            try:
                for requests in disjoint(transfers, batch):
                    if stop.is_set():
                        return
                    started = time.perf_counter()
                    if batch == 1:
                        results = [engine.apply(requests[0])]
                    else:
                        outcomes = engine.apply_batch([(r, None) for r in requests]).outcomes
                        results = [o for o in outcomes if isinstance(o, TransferResult)]
                    ended = time.perf_counter()
                    mine.extend(
                        (ended, ended - started, result.attempts,
                         result.status is Status.COMMITTED)
                        for result in results
                    )  # fmt: skip
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=work, args=(i,), name=f"bench-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        stop.wait(warmup_s)
        window_start = time.perf_counter()
        cpu_start = own_cpu_s()
        pg_start = postgres_cpu_s(pg_data_dir) if pg_data_dir else 0.0
        stop.wait(duration_s)
        window_end = time.perf_counter()
        cpu_end = own_cpu_s()
        pg_end = postgres_cpu_s(pg_data_dir) if pg_data_dir else 0.0
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    inside = [entry for mine in done for entry in mine if window_start <= entry[0] < window_end]
    committed = [entry for entry in inside if entry[3]]
    latencies = sorted(entry[1] * 1000 for entry in committed)
    elapsed = window_end - window_start
    return EngineRun(
        concurrency=concurrency,
        duration_s=elapsed,
        committed=len(committed),
        tps=len(committed) / elapsed,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=percentile(latencies, 99) if latencies else float("nan"),
        retries=sum(entry[2] - 1 for entry in inside),
        client_cpu_us=1e6 * (cpu_end - cpu_start) / max(len(committed), 1),
        server_cpu_us=1e6 * (pg_end - pg_start) / max(len(committed), 1) if pg_data_dir else None,
    )


def disjoint(transfers: Iterable[TransferRequest], size: int) -> Iterator[list[TransferRequest]]:
    """``transfers`` in groups of ``size`` on pairwise disjoint accounts (a transfer that
    shares an account with its group starts the next one), as the dispatcher forms them."""
    group: list[TransferRequest] = []
    held: set[int] = set()
    for request in transfers:
        keys = {request.payer_id, request.payee_id}
        if len(group) == size or keys & held:
            yield group
            group, held = [], set()
        group.append(request)
        held |= keys
    if group:
        yield group


def run_engine_processes(
    settings: Settings,
    processes: int,
    *,
    duration_s: float,
    warmup_s: float,
    batch: int = 1,
    seed: int = 0,
) -> EngineRun:
    """:func:`run_engine` at concurrency 1 in ``processes`` processes at once, summed:
    what WORKER_PROCESSES gives a worker (one interpreter, one GIL, per client), the
    way pgbench ``-j`` gives each client its own thread of C. Server CPU is not split
    per process, so it is not reported."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [
        context.Process(
            target=_engine_child,
            args=(settings, (duration_s, warmup_s, batch, seed * 1000 + i), results),
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    runs: list[EngineRun] = [results.get(timeout=120 + duration_s) for _ in children]
    for child in children:
        child.join(30)
    committed = sum(run.committed for run in runs)
    return EngineRun(
        concurrency=processes,
        duration_s=statistics.mean(run.duration_s for run in runs),
        committed=committed,
        tps=sum(run.tps for run in runs),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=max(run.p99_ms for run in runs),
        retries=sum(run.retries for run in runs),
        client_cpu_us=sum(run.client_cpu_us * run.committed for run in runs) / max(committed, 1),
        server_cpu_us=None,
    )


def _engine_child(settings: Settings, run: tuple[float, float, int, int], results: Any) -> None:
    duration_s, warmup_s, batch, seed = run
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # Every child starts its window after its own warm-up; the start-up of a spawned
    # interpreter (~0.3 s) is well inside the warm-up, so the windows overlap.
    results.put(run_engine(settings, 1, duration_s=duration_s, warmup_s=warmup_s, batch=batch,
                           seed=seed))  # fmt: skip
