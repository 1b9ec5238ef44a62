"""Test helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from worker.engine import RetryPolicy
from worker.settings import Settings
from worker.transport.consumer import Consumer
from worker.transport.service import Service, build


def policy(**overrides: Any) -> RetryPolicy:
    """The default retry policy (the Settings defaults) with ``overrides``."""
    return replace(RetryPolicy.from_settings(Settings()), **overrides)


@contextmanager
def running_worker(
    settings: Settings, *, visibility_timeout_s: int = 30
) -> Iterator[tuple[Consumer, Service]]:
    """The real consumer, in a background thread of this process; drained on exit."""
    service = build(settings, service_name="test-worker")
    consumer = service.consumer(visibility_timeout_s=visibility_timeout_s, drain_timeout_s=10)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer, service
    finally:
        consumer.stop()
        thread.join(30)
        service.close()
