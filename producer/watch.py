"""What ``producer watch`` shows: a sample of the ledger and its queues, and its drawing.

A :func:`sample` reads:

- ``transfer_results`` completed in the last ``window_s`` seconds (on the database's
  clock): results per second by outcome and rejection reason, retries
  (``attempts - 1``), and nearest-rank p50 / p99 / max of the transaction time and of
  end to end (``completed_at - enqueued_at``, the SQS SentTimestamp);
- the transfer queue's ApproximateNumberOfMessages (waiting) and
  ApproximateNumberOfMessagesNotVisible (in flight), and the DLQ's depth (``DLQ_URL``).

:func:`render` draws it as one ``rich`` screen for a terminal, :func:`plain_line` as one
line for a log or a pipe; the command (:mod:`producer.commands.watch`) refreshes them.

Cost: one query per sample over the window. ``transfer_results`` has no index on
``completed_at`` alone, so on a large table each sample scans it; keep the interval
at a few seconds against a big production table (see README, "Watching a run").
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from producer.percentiles import LatencySummary, latency_summary
from producer.sqs import SQS_ERRORS
from worker.outcomes import Status
from worker.transport.sqs import QueueDepth, queue_depth

if TYPE_CHECKING:
    from rich.console import RenderableType

WINDOW_SQL = """
    SELECT status, reason, attempts, transaction_ms,
           extract(epoch FROM completed_at - enqueued_at) * 1000, now()
    FROM transfer_results
    WHERE completed_at >= now() - make_interval(secs => %(window_s)s)
"""


@dataclass(frozen=True)
class Sample:
    """One refresh of the view."""

    at: datetime | None
    window_s: float
    outcomes: dict[str, int]
    """``committed`` or the rejection reason -> results in the window."""
    retries: int
    retried: int
    transaction_ms: LatencySummary | None
    end_to_end_ms: LatencySummary | None
    queue: QueueDepth | None
    """The transfer queue's depth; None when there is no queue or SQS did not answer."""
    dead_letters: int | None
    """Messages visible on the DLQ; None when there is no DLQ or SQS did not answer."""
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Results in the window."""
        return sum(self.outcomes.values())

    def rate(self, count: int) -> float:
        """``count`` per second over the window."""
        return count / self.window_s if self.window_s else 0.0


def sample(
    conn: psycopg.Connection[Any] | None,
    sqs: Any,
    queue_url: str | None,
    dlq_url: str | None,
    window_s: float,
) -> Sample:
    """Read the window's results and the queue depths; failures are reported in
    ``errors`` (the view keeps running through a database or SQS hiccup)."""
    errors: list[str] = []
    outcomes: Counter[str] = Counter()
    retries = retried = 0
    tx: list[float] = []
    e2e: list[float] = []
    at: datetime | None = None
    if conn is not None:
        try:
            for status, reason, attempts, ms, e2e_ms, now in conn.execute(
                WINDOW_SQL, {"window_s": window_s}
            ):
                at = now
                outcomes["committed" if status == Status.COMMITTED else reason or "unknown"] += 1
                retries += attempts - 1
                retried += attempts > 1
                if ms is not None and status == Status.COMMITTED:
                    tx.append(ms)
                if e2e_ms is not None:
                    e2e.append(float(e2e_ms))
        except psycopg.Error as exc:
            errors.append(f"database: {str(exc).strip().splitlines()[0]}")
    depth = dead_letters = None
    try:
        depth = queue_depth(sqs, queue_url) if queue_url else None
        dead_letters = queue_depth(sqs, dlq_url).visible if dlq_url else None
    except SQS_ERRORS as exc:
        errors.append(f"SQS: {exc}")
    return Sample(
        at=at,
        window_s=window_s,
        outcomes=dict(sorted(outcomes.items(), key=lambda kv: (kv[0] != "committed", kv[0]))),
        retries=retries,
        retried=retried,
        transaction_ms=latency_summary(tx),
        end_to_end_ms=latency_summary(e2e),
        queue=depth,
        dead_letters=dead_letters,
        errors=errors,
    )


# --- drawing ------------------------------------------------------------------------


def plain_line(s: Sample) -> str:
    """One line per sample for logs and pipes."""
    outcomes = " ".join(f"{name}={s.rate(n):.1f}/s" for name, n in s.outcomes.items()) or "-"
    parts = [
        (s.at.strftime("%H:%M:%S") if s.at else time.strftime("%H:%M:%S")),
        f"results={s.rate(s.total):.1f}/s",
        outcomes,
        f"retries={s.retries}",
        f"tx_ms p50={_ms(s.transaction_ms, 'p50')} p99={_ms(s.transaction_ms, 'p99')}",
        f"e2e_ms p50={_ms(s.end_to_end_ms, 'p50')} p99={_ms(s.end_to_end_ms, 'p99')}",
        "queue={} in_flight={} dlq={}".format(*_queues(s)),
    ]
    return "  ".join(parts + [f"error: {e}" for e in s.errors])


def render(s: Sample, title: str) -> RenderableType:
    """The terminal screen: outcomes, latencies and queues, as rich tables."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text.assemble(
        (f"{title}  ", "bold"),
        (f"last {s.window_s:g} s", "dim"),
        (f"  at {s.at:%H:%M:%S}" if s.at else "", "dim"),
        ("   q quits", "dim"),
    )
    outcomes = Table(title="results", title_justify="left", expand=False, box=None)
    outcomes.add_column("outcome")
    outcomes.add_column("per s", justify="right")
    outcomes.add_column("count", justify="right")
    outcomes.add_row(Text("all", style="bold"), f"{s.rate(s.total):,.1f}", f"{s.total:,}")
    for name, count in s.outcomes.items():
        style = "green" if name == "committed" else "yellow"
        outcomes.add_row(Text(name, style=style), f"{s.rate(count):,.1f}", f"{count:,}")
    pct = f"{100 * s.retried / s.total:.2f} %" if s.total else "-"
    outcomes.add_row("retries", f"{s.rate(s.retries):,.1f}", f"{s.retries:,} ({pct} retried)")

    latency = Table(title="latency ms", title_justify="left", box=None)
    for column in ("", "p50", "p99", "max", "n"):
        latency.add_column(column, justify="right" if column else "left")
    for label, summary in (("transaction", s.transaction_ms), ("end to end", s.end_to_end_ms)):
        latency.add_row(
            label,
            _ms(summary, "p50"),
            _ms(summary, "p99"),
            _ms(summary, "max"),
            "-" if summary is None else f"{summary.count:,}",
        )

    queues = Table(title="queues", title_justify="left", box=None)
    queues.add_column("waiting", justify="right")
    queues.add_column("in flight", justify="right")
    queues.add_column("DLQ", justify="right")
    waiting, in_flight, dlq = _queues(s)
    queues.add_row(waiting, in_flight, Text(dlq, style="red bold" if s.dead_letters else ""))
    parts: list[RenderableType] = [header, Text(""), outcomes, Text(""), latency, Text(""), queues]
    parts += [Text(f"error: {e}", style="red") for e in s.errors]
    return Group(*parts)


def _ms(summary: LatencySummary | None, name: str) -> str:
    return "-" if summary is None else f"{getattr(summary, name):.2f}"


def _queues(s: Sample) -> tuple[str, str, str]:
    """Waiting, in flight and on the DLQ, as drawn ("-" when unknown)."""
    waiting, in_flight = (None, None) if s.queue is None else (s.queue.visible, s.queue.in_flight)
    return _n(waiting), _n(in_flight), _n(s.dead_letters)


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
