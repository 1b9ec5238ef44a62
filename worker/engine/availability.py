"""Is the database reachable? One answer per process, so a worker can hold back.

During an outage every attempt waits out the pool timeout and the retry budget, and
every message it receives only raises its receive count until the queue's redrive
policy dead-letters a perfectly good transfer. So when the database is unreachable
the worker stops taking work instead, and one prober asks the database at a bounded,
jittered interval whether it is back.

"Unreachable" is deliberately more than one broken connection: a restart or a
``pg_terminate_backend`` breaks every pooled connection once, and the retry on a fresh
connection succeeds. The engine reports the database down only when a transfer's retry
on a fresh connection failed too, or the pool could not produce a connection at all
(:meth:`Availability.unreachable`). Conflicts, rejections and unexpected errors never
do: holding back must not hide poison.

The state changes are logged once each ("database unreachable, holding back",
"database back after N s"), exported as the ``HoldingBack`` metric, and written into
the worker's health file for ``python -m worker health --ready``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

_JITTER = random.Random()

Probe = Callable[[], None]
"""Raises when the database cannot answer a trivial query."""


class Availability:
    """The database's reachability as this process last saw it; thread-safe."""

    def __init__(
        self,
        probe: Probe,
        *,
        interval_s: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._on_change = on_change or (lambda _down: None)
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._up.set()
        self._down_since: float | None = None
        self._last_error = ""

    # --- what the engine reports ----------------------------------------------------

    def unreachable(self, error: str) -> None:
        """The database did not answer even on a fresh connection: hold back."""
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._last_error = error
            self._up.clear()
        log.warning("database unreachable, holding back", error=error)
        self._on_change(True)

    def reachable(self) -> None:
        """A probe (or any statement) got an answer: resume."""
        with self._lock:
            if self._down_since is None:
                return
            down_for = time.monotonic() - self._down_since
            self._down_since = None
            self._up.set()
        log.info("database back", after_s=round(down_for, 1))
        self._on_change(False)

    # --- what the transports ask ----------------------------------------------------

    @property
    def down(self) -> bool:
        """True while holding back."""
        return not self._up.is_set()

    @property
    def down_for_s(self) -> float:
        """Seconds since the database was found unreachable (0 while it is reachable)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def wait_up(self, timeout_s: float) -> bool:
        """Block until the database is reachable again; False on timeout."""
        return self._up.wait(timeout_s)

    def probe_once(self) -> bool:
        """Ask the database now; mark it reachable when it answers."""
        try:
            self._probe()
        except Exception as exc:  # noqa: BLE001 - any failure means still unreachable
            log.debug("database probe failed", error=str(exc))
            return False
        self.reachable()
        return True

    def run_prober(self, stopping: threading.Event) -> None:
        """Until ``stopping``: while down, probe every interval (jittered +-50 %).

        One probe per process per interval keeps a fleet's reconnect rate bounded
        (DSQL admits 100 new connections per second per cluster): 100 tasks probing
        every 5 s make 20 attempts a second.
        """
        while not stopping.is_set():
            if not self.down:
                # Wake up promptly once something reports the database down.
                stopping.wait(0.2)
                continue
            if stopping.wait(self._interval_s * _JITTER.uniform(0.5, 1.5)):
                return
            self.probe_once()
