"""Test helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from worker.consumer import Consumer, ConsumerConfig
from worker.service import Service, build
from worker.settings import Settings


@contextmanager
def running_worker(
    settings: Settings, *, visibility_timeout_s: int = 30
) -> Iterator[tuple[Consumer, Service]]:
    """The real consumer, in a background thread of this process; drained on exit."""
    service = build(settings, service_name="test-worker")
    assert service.queue_url is not None
    config = replace(
        ConsumerConfig.from_settings(
            settings, queue_url=service.queue_url, visibility_timeout_s=visibility_timeout_s
        ),
        drain_timeout_s=10,
    )
    consumer = Consumer(
        config,
        service.client,
        service.processor,
        service.dead_letters,
        availability=service.availability,
        metrics=service.metrics,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer, service
    finally:
        consumer.stop()
        thread.join(30)
        service.close()
