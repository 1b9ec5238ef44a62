"""CloudWatch EMF metrics: one aggregated document per interval."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from worker.dispatch.metrics import MAX_VALUES, Metrics
from worker.outcomes import Reason, Status, TransferResult


def result(status: Status, attempts: int = 1, duplicate: bool = False) -> TransferResult:
    return TransferResult(
        transfer_id=uuid.uuid4(),
        payer_id=1,
        payee_id=2,
        amount=Decimal(1),
        status=status,
        reason=None if status is Status.COMMITTED else Reason.INSUFFICIENT_FUNDS,
        payer_balance=None,
        attempts=attempts,
        transaction_ms=2.5 if status is Status.COMMITTED else None,
        enqueued_at=None,
        completed_at=datetime.now(UTC),
        duplicate=duplicate,
    )


def test_one_document_aggregates_the_interval() -> None:
    """Counters are sums over the interval, in a valid EMF document on one line."""
    lines: list[str] = []
    metrics = Metrics("Ns", "svc", emit=lines.append)
    for _ in range(3):
        metrics.outcome(result(Status.COMMITTED, attempts=2), end_to_end_ms=10.0)
    metrics.outcome(result(Status.REJECTED), end_to_end_ms=None)
    metrics.outcome(result(Status.COMMITTED, duplicate=True), end_to_end_ms=1.0)
    metrics.failed(attempts=4)
    metrics.malformed()
    metrics.flush()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Ns"
    assert directive["Dimensions"] == [["Service"]]
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"Committed", "TransactionMs", "EndToEndMs"} <= names
    assert all(name in doc for name in names)
    assert doc["Service"] == "svc"
    assert (doc["Committed"], doc["Rejected"], doc["Duplicates"]) == (3, 1, 1)
    assert (doc["Failed"], doc["Malformed"], doc["OccRetries"]) == (1, 1, 3 + 3)
    assert doc["TransactionMs"] == [2.5, 2.5, 2.5]
    assert doc["EndToEndMs"] == [10.0, 10.0, 10.0]


def test_idle_interval_emits_nothing_and_counters_reset() -> None:
    """No traffic, no line; a flush starts a fresh interval."""
    lines: list[str] = []
    metrics = Metrics(emit=lines.append)
    assert metrics.flush() is None
    metrics.malformed()
    metrics.flush()
    assert metrics.flush() is None
    assert len(lines) == 1


def test_latency_values_are_capped_per_document() -> None:
    """EMF accepts at most 100 values per metric: a busy interval is sampled."""
    lines: list[str] = []
    metrics = Metrics(emit=lines.append)
    for i in range(1000):
        metrics.outcome(result(Status.COMMITTED), end_to_end_ms=float(i))
    doc = metrics.flush()
    assert doc is not None
    assert doc["Committed"] == 1000
    assert len(doc["EndToEndMs"]) == MAX_VALUES
    assert max(doc["EndToEndMs"]) > 500, "the sample covers the whole interval"
