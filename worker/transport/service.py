"""Wiring: Settings -> pool, availability, engine, metrics, dispatch, SQS client, DLQ.

Shared by the container entry point (:func:`run_worker`) and the Lambda handler, so
both run the same engine with the same policies; tests and the bench build their
consumers here too (:meth:`Service.consumer`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from worker import shutdown
from worker.db import create_pool, purge_broken
from worker.dispatch import Batching, Dispatcher, Metrics
from worker.engine import Availability, RetryPolicy, TransferEngine
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings
from worker.transport.consumer import Consumer, ConsumerConfig
from worker.transport.sqs import (
    DeadLetters,
    LazyClient,
    queue_url,
    sqs_client,
    visibility_timeout,
)

log = structlog.get_logger(__name__)


@dataclass
class Service:
    """Everything a transport needs to process transfer messages."""

    settings: Settings
    pool: ConnectionPool[psycopg.Connection[Any]]
    metrics: Metrics
    engine: TransferEngine
    client: Any
    queue_url: str | None
    dead_letters: DeadLetters | None
    availability: Availability

    def dispatcher(self, *, batched: bool = False) -> Dispatcher:
        """A dispatch step on this service's engine and metrics (one per consumer or
        per Lambda batch: it owns its scheduler and FIFO state). ``batched``: with the
        configured TRANSFER_BATCH (the consumer); otherwise one transfer at a time (the
        Lambda: its batch of at most 10 is already split over its connections)."""
        schedule = RedeliverySchedule.from_settings(self.settings)
        batching = Batching.from_settings(self.settings) if batched else None
        return Dispatcher(self.engine, self.metrics, schedule, batching)

    def consumer(
        self,
        *,
        visibility_timeout_s: int | None = None,
        drain_timeout_s: float | None = None,
        health_file: Path | None = None,
    ) -> Consumer:
        """The long-running consumer of this service's queue."""
        assert self.queue_url is not None
        visibility = visibility_timeout_s or visibility_timeout(
            self.settings, self.client, self.queue_url
        )
        config = ConsumerConfig.from_settings(
            self.settings,
            queue_url=self.queue_url,
            visibility_timeout_s=visibility,
            health_file=health_file,
        )
        if drain_timeout_s is not None:
            config = replace(config, drain_timeout_s=drain_timeout_s)
        return Consumer(
            config,
            self.client,
            self.dispatcher(batched=True),
            self.dead_letters,
            availability=self.availability,
            metrics=self.metrics,
        )

    def close(self) -> None:
        """Flush metrics and close the pool."""
        self.metrics.stop()
        self.pool.close()


def build(settings: Settings, *, service_name: str, queue_required: bool = True) -> Service:
    """Open the pool (without waiting for the database) and wire the engine."""
    pool = create_pool(settings, max_size=max(settings.pool_max_size, settings.concurrency))
    pool.open(wait=False)
    metrics = Metrics(settings.metrics_namespace, service_name)
    availability = Availability(
        partial(_probe, pool, settings.connect_timeout_s),
        interval_s=settings.db_probe_interval_s,
        on_change=metrics.holding_back,
    )
    engine = TransferEngine(
        pool,
        RetryPolicy.from_settings(settings),
        availability=availability,
        statements=settings.engine_statements,
    )
    client = LazyClient(
        partial(sqs_client, settings, max_pool_connections=settings.concurrency + 10)
    )
    url = queue_url(settings, client) if queue_required or settings.queue_url else None
    dead_letters = DeadLetters(client, settings.dlq_url, url or "") if settings.dlq_url else None
    return Service(settings, pool, metrics, engine, client, url, dead_letters, availability)


def _probe(pool: ConnectionPool[psycopg.Connection[Any]], timeout_s: float) -> None:
    """One ``SELECT 1`` on a pooled connection; dead idle connections are purged first
    if it fails, so the next probe gets a fresh one."""
    try:
        with pool.connection(timeout=timeout_s) as conn:
            conn.execute("SELECT 1")
    except Exception:
        purge_broken(pool)
        raise


def run_worker(settings: Settings) -> int:
    """``python -m worker run``: consume until SIGTERM/SIGINT, drain, exit 0."""
    service = build(settings, service_name="transfer-worker")
    consumer = service.consumer(health_file=Path(settings.health_file))

    def on_signal(name: str) -> None:
        log.info("signal received, draining", signal=name)
        consumer.stop()

    if threading.current_thread() is threading.main_thread():
        shutdown.install()  # idempotent; `python -m worker` already did it
    shutdown.on_request(on_signal)
    service.metrics.start(settings.metrics_interval_s)
    try:
        consumer.run()
    finally:
        service.close()
        Path(settings.health_file).unlink(missing_ok=True)
    return 0
