"""Wiring: Settings -> pool, engine, metrics, processor, SQS client, DLQ.

Shared by the container entry point (:func:`run_worker`) and the Lambda handler, so
both run the same engine with the same policies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from worker import shutdown
from worker.db import create_pool
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

    def close(self) -> None:
        """Flush metrics and close the pool."""
        self.metrics.stop()
        self.pool.close()


def build(settings: Settings, *, service_name: str, queue_required: bool = True) -> Service:
    """Open the pool (without waiting for the database) and wire the processor."""
    pool = create_pool(settings, max_size=max(settings.pool_max_size, settings.concurrency))
    pool.open(wait=False)
    metrics = Metrics(settings.metrics_namespace, service_name)
    engine = TransferEngine(pool, RetryPolicy.from_settings(settings))
    client = sqs_client(settings, max_pool_connections=settings.concurrency + 10)
    url = queue_url(settings, client) if queue_required or settings.queue_url else None
    dead_letters = DeadLetters(client, settings.dlq_url, url or "") if settings.dlq_url else None
    return Service(settings, pool, metrics, Processor(engine, metrics), client, url, dead_letters)


def run_worker(settings: Settings) -> int:
    """``python -m worker run``: consume until SIGTERM/SIGINT, drain, exit 0."""
    from worker.consumer import Consumer, ConsumerConfig

    service = build(settings, service_name="transfer-worker")
    assert service.queue_url is not None
    config = ConsumerConfig(
        queue_url=service.queue_url,
        visibility_timeout_s=visibility_timeout(settings, service.client, service.queue_url),
        concurrency=settings.concurrency,
        receive_wait_s=settings.receive_wait_s,
        retry_visibility_s=settings.retry_visibility_s,
        drain_timeout_s=settings.drain_timeout_s,
        health_file=Path(settings.health_file),
    )
    consumer = Consumer(config, service.client, service.processor, service.dead_letters)

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


def check_health(settings: Settings) -> int:
    """``python -m worker health``: 0 when the worker touched its liveness file recently."""
    path = Path(settings.health_file)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: {path} does not exist (worker not running?)")
        return 1
    if age > settings.health_max_age_s:
        print(f"unhealthy: last heartbeat {age:.0f}s ago (limit {settings.health_max_age_s:.0f}s)")
        return 1
    print(f"healthy: last heartbeat {age:.1f}s ago")
    return 0
