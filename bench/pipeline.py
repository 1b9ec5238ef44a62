"""End to end through moto (worker + producer) against moto's own throughput.

Both runs use the same moto server, a fresh queue each, and the same producer command
(``python -m producer load --threads T --max-backlog M``, whose flow control keeps
moto's queue shallow). They differ only in the consumer: a real worker process
applying each transfer on 100,000 uncontended accounts, or :mod:`bench.sqs_raw`
receiving and deleting with no work. Throughput is messages finished per second from
the first send to the last result (end to end) or the last delete (raw).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.cpu import own_cpu_s, postgres_cpu_s, process_cpu_s, reaped_children_cpu_s
from bench.processes import (
    ROOT,
    WORKER_COMMAND,
    ProcessFailed,
    SampledWorkers,
    base_env,
    producer_load,
)
from sandbox.processes import WorkerProcess
from sandbox.sqs import REGION, LocalSqs
from worker.transport.sqs import BATCH

ACCOUNTS = 100_000
MOTO_ACCOUNT_ID = "123456789012"
"""moto's default account, the one its server uses for unsigned test credentials."""
THREADS = 4
MAX_BACKLOG = 50
WORKER_CONCURRENCY = 10
"""The worker's default (POOL_MAX_SIZE)."""


@dataclass(frozen=True)
class PipelineConfig:
    """What both runs share."""

    database_url: str
    sqs: LocalSqs
    workdir: Path
    pg_data_dir: Path
    messages: int
    threads: int = THREADS
    max_backlog: int = MAX_BACKLOG


def raw_run(config: PipelineConfig) -> dict[str, Any]:
    """moto alone: the producer sends, :mod:`bench.sqs_raw` receives and deletes."""
    name = f"raw-{uuid.uuid4().hex[:8]}"
    queues = config.sqs.create_queues(name)
    watcher = QueueWatcher(name)
    env = base_env(config.database_url, config.sqs, queues)
    ready = config.workdir / f"{name}.ready"
    pollers = math.ceil(2 * WORKER_CONCURRENCY / BATCH)
    consumer = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "bench.sqs_raw", "--expect", str(config.messages),
         "--pollers", str(pollers), "--ready-file", str(ready)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    moto_cpu, pg_cpu = own_cpu_s(), postgres_cpu_s(config.pg_data_dir)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if consumer.poll() is not None or time.monotonic() > deadline:
            raise ProcessFailed(f"raw consumer did not start: {consumer.communicate()[1][-2000:]}")
        time.sleep(0.05)
    producer_cpu = reaped_children_cpu_s()
    watcher.start()
    load = producer_load(
        env,
        iters=config.messages,
        threads=config.threads,
        accounts=ACCOUNTS,
        max_backlog=config.max_backlog,
        wait=False,
    )
    producer_cpu = reaped_children_cpu_s() - producer_cpu
    out, err = consumer.communicate(timeout=600)
    watcher.stop()
    moto_cpu, pg_cpu = own_cpu_s() - moto_cpu, postgres_cpu_s(config.pg_data_dir) - pg_cpu
    if consumer.returncode != 0:
        raise ProcessFailed(f"raw consumer exited {consumer.returncode}: {err[-2000:]}")
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    first_sent = datetime.fromisoformat(load["first_sent_at"]).timestamp()
    elapsed = summary["last_delete_at"] - first_sent
    return {
        "messages": summary["deleted"],
        "sent": load["sent"],
        "elapsed_s": elapsed,
        "throughput_per_s": summary["deleted"] / elapsed,
        "send_rate_per_s": load["send_rate_per_s"],
        "receives": summary["receives"],
        "empty_receives": summary["empty_receives"],
        "moto_queue": watcher.summary(),
        "cpu_ms_per_message": _per_message(
            summary["deleted"],
            moto=moto_cpu,
            consumer=summary["consume_cpu_s"],
            producer=producer_cpu,
            postgres=pg_cpu,
        ),
    }


def e2e_run(
    config: PipelineConfig,
    worker_command: Sequence[str] = WORKER_COMMAND,
    on_ready: Callable[[WorkerProcess], None] | None = None,
) -> dict[str, Any]:
    """A worker process and the producer's ``load --wait``; the worker's RSS is sampled
    throughout (steady state: the second half of the load), and so is moto's queue."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    queues = config.sqs.create_queues(name)
    env = base_env(config.database_url, config.sqs, queues)
    workers = SampledWorkers.start(env, config.workdir, 1, command=worker_command)
    (worker,) = workers.workers
    watcher = QueueWatcher(name)
    try:
        if on_ready is not None:
            on_ready(worker)
        watcher.start()
        started = time.monotonic()
        moto_cpu, pg_cpu = own_cpu_s(), postgres_cpu_s(config.pg_data_dir)
        worker_cpu = process_cpu_s(worker.process.pid)
        producer_cpu = reaped_children_cpu_s()
        load = producer_load(
            env,
            iters=config.messages,
            threads=config.threads,
            accounts=ACCOUNTS,
            max_backlog=config.max_backlog,
            wait=True,
        )
        ended = time.monotonic()
        producer_cpu = reaped_children_cpu_s() - producer_cpu
        moto_cpu = own_cpu_s() - moto_cpu
        worker_cpu = process_cpu_s(worker.process.pid) - worker_cpu
        pg_cpu = postgres_cpu_s(config.pg_data_dir) - pg_cpu
    finally:
        watcher.stop()
        codes = workers.stop()
    if codes != [0]:
        raise ProcessFailed(f"worker exited {codes}; see {worker.log}")
    return {
        "messages": load["committed"] + load["rejected"],
        "sent": load["sent"],
        "failed": load["failed"],
        "elapsed_s": load["total_time_s"],
        "throughput_per_s": load["throughput_per_s"],
        "send_rate_per_s": load["send_rate_per_s"],
        "retries_per_transfer": load["retries"]["per_transfer"],
        "end_to_end_ms_p50": (load["end_to_end_ms"] or {}).get("p50"),
        "end_to_end_ms_p99": (load["end_to_end_ms"] or {}).get("p99"),
        "worker_rss": workers.rss(worker).summary(since=started + (ended - started) / 2),
        "moto_queue": watcher.summary(),
        "cpu_ms_per_message": _per_message(
            load["committed"] + load["rejected"],
            moto=moto_cpu,
            consumer=worker_cpu,
            producer=producer_cpu,
            postgres=pg_cpu,
        ),
    }


class QueueWatcher:
    """Samples moto's own state of one queue (moto runs in this process): messages
    it holds, and how many are in flight (received, not yet deleted)."""

    def __init__(self, queue_name: str, interval_s: float = 0.25) -> None:
        self.queue_name = queue_name
        self.interval_s = interval_s
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-watch", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict[str, float | None]:
        """Median and max of messages held and of messages in flight."""
        held = [h for h, _ in self.samples]
        in_flight = [f for _, f in self.samples]
        return {
            "held_median": statistics.median(held) if held else None,
            "held_max": max(held, default=None),
            "in_flight_median": statistics.median(in_flight) if in_flight else None,
            "in_flight_max": max(in_flight, default=None),
        }

    def _run(self) -> None:
        from moto.sqs.models import sqs_backends

        backend = sqs_backends[MOTO_ACCOUNT_ID][REGION]
        while not self._stop.wait(self.interval_s):
            queue = backend.queues.get(self.queue_name)
            if queue is None:
                continue
            messages = list(queue._messages)  # moto's internals, read only
            self.samples.append((len(messages), len(queue.pending_messages)))


def _per_message(messages: int, **cpu_s: float) -> dict[str, float]:
    return {name: 1000 * seconds / max(messages, 1) for name, seconds in cpu_s.items()}
