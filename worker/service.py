"""Wiring: Settings -> pool, engine, metrics, processor, SQS client, DLQ.

Shared by the container entry point (:func:`run_worker`) and the Lambda handler, so
both run the same engine with the same policies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from worker import shutdown
from worker.availability import Availability
from worker.db import create_pool, purge_broken
from worker.engine import TransferEngine
from worker.metrics import Metrics
from worker.processing import Processor
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.sqs import DeadLetters, queue_url, sqs_client, visibility_timeout

log = structlog.get_logger(__name__)


@dataclass
class Service:
    """Everything a transport needs to process transfer messages."""

    settings: Settings
    pool: ConnectionPool[psycopg.Connection[Any]]
    metrics: Metrics
    processor: Processor
    client: Any
    queue_url: str | None
    dead_letters: DeadLetters | None
    availability: Availability

    def close(self) -> None:
        """Flush metrics and close the pool."""
        self.metrics.stop()
        self.pool.close()


def build(settings: Settings, *, service_name: str, queue_required: bool = True) -> Service:
    """Open the pool (without waiting for the database) and wire the processor."""
    pool = create_pool(settings, max_size=max(settings.pool_max_size, settings.concurrency))
    pool.open(wait=False)
    metrics = Metrics(settings.metrics_namespace, service_name)
    availability = Availability(
        partial(_probe, pool, settings.connect_timeout_s),
        interval_s=settings.db_probe_interval_s,
        on_change=metrics.holding_back,
    )
    engine = TransferEngine(pool, RetryPolicy.from_settings(settings), availability=availability)
    client = sqs_client(settings, max_pool_connections=settings.concurrency + 10)
    url = queue_url(settings, client) if queue_required or settings.queue_url else None
    dead_letters = DeadLetters(client, settings.dlq_url, url or "") if settings.dlq_url else None
    processor = Processor(engine, metrics)
    return Service(settings, pool, metrics, processor, client, url, dead_letters, availability)


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
    from worker.consumer import Consumer, ConsumerConfig

    service = build(settings, service_name="transfer-worker")
    assert service.queue_url is not None
    config = ConsumerConfig.from_settings(
        settings,
        queue_url=service.queue_url,
        visibility_timeout_s=visibility_timeout(settings, service.client, service.queue_url),
        health_file=Path(settings.health_file),
    )
    consumer = Consumer(
        config,
        service.client,
        service.processor,
        service.dead_letters,
        availability=service.availability,
        metrics=service.metrics,
    )

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
