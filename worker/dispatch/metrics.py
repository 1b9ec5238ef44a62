"""CloudWatch metrics as Embedded Metric Format (EMF) lines, aggregated per interval.

One JSON object per interval on stdout (CloudWatch Logs turns it into metrics; the
awslogs driver and Lambda both ship stdout), never one per message: at a thousand
transfers a second, per-message metric lines would cost more than the transfers.

Counters are sums over the interval. ``HoldingBack`` is a gauge: 1 when the worker
held back at any moment of the interval, and while it is 1 a document goes out every
interval even with no traffic, so an alarm sees the outage, not missing data.
Latencies are sent as EMF value arrays, which
CloudWatch turns into full distributions (p50/p99 across every task): up to 100
values per metric and line, a uniform reservoir sample when the interval saw more.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from worker.outcomes import Status, TransferResult

MAX_VALUES = 100
"""EMF's limit on values per metric in one document."""

COUNTERS = ("Committed", "Rejected", "Duplicates", "Failed", "Malformed", "OccRetries")
SAMPLED = ("TransactionMs", "EndToEndMs")
GAUGES = ("HoldingBack",)
"""1 if the worker held back (database unreachable) at any moment of the interval."""


_SAMPLER = random.Random()


class _Reservoir:
    """Uniform sample of at most MAX_VALUES values (Vitter's algorithm R)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.seen = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < MAX_VALUES:
            self.values.append(value)
        else:
            slot = _SAMPLER.randrange(self.seen)
            if slot < MAX_VALUES:
                self.values[slot] = value


class Metrics:
    """Thread-safe counters and samples, flushed as one EMF document per interval."""

    def __init__(
        self,
        namespace: str = "DsqlTransfers",
        service: str = "transfer-worker",
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.service = service
        self._emit = emit or _print_line
        self._lock = threading.Lock()
        self._holding = False
        self._held = False
        self._reset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reset(self) -> None:
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._samples = {name: _Reservoir() for name in SAMPLED}

    # --- recording --------------------------------------------------------------------

    def outcome(self, result: TransferResult, end_to_end_ms: float | None) -> None:
        """Count one applied (or repeated) transfer."""
        with self._lock:
            if result.duplicate:
                self._counts["Duplicates"] += 1
                return
            key = "Committed" if result.status is Status.COMMITTED else "Rejected"
            self._counts[key] += 1
            self._counts["OccRetries"] += result.attempts - 1
            if result.transaction_ms is not None:
                self._samples["TransactionMs"].add(result.transaction_ms)
            if end_to_end_ms is not None:
                self._samples["EndToEndMs"].add(end_to_end_ms)

    def failed(self, attempts: int) -> None:
        """Count a transfer left for redelivery after ``attempts`` attempts."""
        with self._lock:
            self._counts["Failed"] += 1
            self._counts["OccRetries"] += max(attempts - 1, 0)

    def malformed(self) -> None:
        """Count a message that broke the contract."""
        with self._lock:
            self._counts["Malformed"] += 1

    def holding_back(self, holding: bool) -> None:
        """Record whether the worker is holding back right now."""
        with self._lock:
            self._holding = holding
            self._held = self._held or holding

    # --- flushing ---------------------------------------------------------------------

    def flush(self) -> dict[str, Any] | None:
        """Emit and return the interval's EMF document; None (and no line) when idle."""
        with self._lock:
            counts, samples = self._counts, self._samples
            held = self._held
            self._held = self._holding
            self._reset()
        if not held and not any(counts.values()) and not any(s.seen for s in samples.values()):
            return None
        document: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [["Service"]],
                        "Metrics": [{"Name": n, "Unit": "Count"} for n in (*COUNTERS, *GAUGES)]
                        + [{"Name": n, "Unit": "Milliseconds"} for n in SAMPLED if samples[n].seen],
                    }
                ],
            },
            "Service": self.service,
            **counts,
            "HoldingBack": int(held),
        }
        for name in SAMPLED:
            if samples[name].seen:
                document[name] = [round(v, 3) for v in samples[name].values]
        self._emit(json.dumps(document, separators=(",", ":")))
        return document

    def start(self, interval_s: float) -> None:
        """Flush every ``interval_s`` seconds in a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.flush()

        self._thread = threading.Thread(target=loop, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the flushing thread and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
