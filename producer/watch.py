"""``python -m producer watch``: a live view of the ledger and its queues.

Every ``--interval`` seconds (default 1) it samples:

- ``transfer_results`` completed in the last ``--window`` seconds (default 10, on the
  database's clock): results per second by outcome and rejection reason, retries
  (``attempts - 1``), and nearest-rank p50 / p99 / max of the transaction time and of
  end to end (``completed_at - enqueued_at``, the SQS SentTimestamp);
- the transfer queue's ApproximateNumberOfMessages (waiting) and
  ApproximateNumberOfMessagesNotVisible (in flight), and the DLQ's depth (``DLQ_URL``).

On a terminal it draws one screen with ``rich`` (redrawn in place, so it works over
SSH in any terminal that ``ls --color`` works in) and quits on ``q`` or Ctrl-C,
leaving the terminal as it was. When stdout is not a terminal (a pipe, a log file) it
prints one plain line per sample instead, ``--count N`` lines then exits (default:
until interrupted).

Cost: one query per sample over the window. ``transfer_results`` has no index on
``completed_at`` alone, so on a large table each sample scans it; keep ``--interval``
at a few seconds against a big production table (see README, "Watching a run").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import psycopg

from producer.stats import LatencySummary, latency_summary
from worker.outcomes import Status
from worker.settings import Settings

if TYPE_CHECKING:
    from rich.console import RenderableType

    from producer.cli import Subparsers

DEFAULT_INTERVAL_S = 1.0
DEFAULT_WINDOW_S = 10.0

WINDOW_SQL = """
    SELECT status, reason, attempts, transaction_ms,
           extract(epoch FROM completed_at - enqueued_at) * 1000, now()
    FROM transfer_results
    WHERE completed_at >= now() - make_interval(secs => %(window_s)s)
"""


@dataclass(frozen=True)
class QueueDepth:
    """What SQS reports, approximately; None when it could not be read."""

    waiting: int | None = None
    in_flight: int | None = None
    dead_letters: int | None = None


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
    queue: QueueDepth
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
    return Sample(
        at=at,
        window_s=window_s,
        outcomes=dict(sorted(outcomes.items(), key=lambda kv: (kv[0] != "committed", kv[0]))),
        retries=retries,
        retried=retried,
        transaction_ms=latency_summary(tx),
        end_to_end_ms=latency_summary(e2e),
        queue=_depths(sqs, queue_url, dlq_url, errors),
        errors=errors,
    )


def _depths(sqs: Any, queue_url: str | None, dlq_url: str | None, errors: list[str]) -> QueueDepth:
    from producer.sqs import SQS_ERRORS

    waiting = in_flight = dead = None
    try:
        if queue_url:
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            waiting = int(attrs["ApproximateNumberOfMessages"])
            in_flight = int(attrs["ApproximateNumberOfMessagesNotVisible"])
        if dlq_url:
            attrs = sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            dead = int(attrs["ApproximateNumberOfMessages"])
    except SQS_ERRORS as exc:
        errors.append(f"SQS: {exc}")
    return QueueDepth(waiting, in_flight, dead)


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
        f"queue={_n(s.queue.waiting)} in_flight={_n(s.queue.in_flight)}"
        f" dlq={_n(s.queue.dead_letters)}",
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
    dlq = _n(s.queue.dead_letters)
    queues.add_row(
        _n(s.queue.waiting),
        _n(s.queue.in_flight),
        Text(dlq, style="red bold" if s.queue.dead_letters else ""),
    )
    parts: list[RenderableType] = [header, Text(""), outcomes, Text(""), latency, Text(""), queues]
    parts += [Text(f"error: {e}", style="red") for e in s.errors]
    return Group(*parts)


def _ms(summary: LatencySummary | None, name: str) -> str:
    return "-" if summary is None else f"{getattr(summary, name):.2f}"


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


# --- the command --------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    """``watch [--interval S] [--window S] [--count N]``."""
    from producer.send import seconds

    cmd = subparsers.add_parser(
        "watch",
        help="live view: results/s by outcome, retries, latency, queue, in-flight and DLQ",
        description="Refresh a view of the last --window seconds of results and the queue "
        "depths every --interval seconds. On a terminal: q or Ctrl-C quits. Otherwise one "
        "plain line per refresh.",
    )
    cmd.add_argument(
        "--interval",
        type=seconds,
        default=DEFAULT_INTERVAL_S,
        metavar="S",
        help=f"seconds between refreshes (default: {DEFAULT_INTERVAL_S:g})",
    )
    cmd.add_argument(
        "--window",
        type=seconds,
        default=DEFAULT_WINDOW_S,
        metavar="S",
        help=f"seconds of results each refresh covers (default: {DEFAULT_WINDOW_S:g})",
    )
    cmd.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="stop after N refreshes (default: until q or Ctrl-C)",
    )
    cmd.set_defaults(handler=run_watch)


def run_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Sample and draw until told to stop; exit 0 on q, Ctrl-C, SIGTERM or --count."""
    from producer.cli import EXIT_OK, _fail
    from producer.sqs import SQS_ERRORS, QueueNotConfigured, queue_url, sqs_clients
    from worker.db import connect

    try:
        import rich  # noqa: F401
    except ImportError:
        return _fail("watch needs rich: pip install 'dsql-transfers[producer]'")
    sqs, url = None, None
    if settings.queue_url or settings.queue_name or settings.dlq_url:
        try:
            sqs = sqs_clients(settings)[0]
            url = queue_url(settings, sqs) if settings.queue_url or settings.queue_name else None
        except QueueNotConfigured as exc:
            return _fail(str(exc))
        except SQS_ERRORS as exc:
            return _fail(f"SQS: {exc}")
    stop = _Stop()
    with connect(settings, autocommit=True) as conn, stop.on_signals():
        samples = _samples(conn, sqs, queue_url=url, dlq_url=settings.dlq_url, args=args, stop=stop)
        if sys.stdout.isatty():
            _live(samples, args.interval, stop)
        else:
            for s in samples:
                print(plain_line(s), flush=True)
    return EXIT_OK


class _Stop:
    """Set by q, Ctrl-C or SIGTERM; the loops check it between refreshes."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        def handle(_signum: int, _frame: FrameType | None) -> None:
            self.requested = True

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _samples(
    conn: psycopg.Connection[Any],
    sqs: Any,
    *,
    queue_url: str | None,
    dlq_url: str | None,
    args: argparse.Namespace,
    stop: _Stop,
) -> Iterator[Sample]:
    taken = 0
    while not stop.requested and (args.count is None or taken < args.count):
        started = time.monotonic()
        yield sample(conn, sqs, queue_url, dlq_url, args.window)
        taken += 1
        if args.count is not None and taken >= args.count:
            return
        _wait(args.interval - (time.monotonic() - started), stop)


def _wait(seconds: float, stop: _Stop, keys: TextIO | None = None) -> None:
    """Sleep up to ``seconds``, returning early when stopped or ``q`` is typed on
    ``keys`` (a terminal in cbreak mode)."""
    deadline = time.monotonic() + max(seconds, 0)
    while not stop.requested and (left := deadline - time.monotonic()) > 0:
        if keys is None:
            time.sleep(min(left, 0.1))
            continue
        ready, _, _ = select.select([keys], [], [], min(left, 0.1))
        if ready and os.read(keys.fileno(), 32).lower().startswith(b"q"):
            stop.requested = True


def _live(samples: Iterator[Sample], interval_s: float, stop: _Stop) -> None:
    """Draw each sample in place; q (read in cbreak mode) or Ctrl-C quits."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with _cbreak(sys.stdin) as keys, Live(console=console, auto_refresh=False, screen=True) as live:
        for s in _keyed(samples, keys, interval_s, stop):
            live.update(render(s, "dsql-transfers watch"), refresh=True)


def _keyed(
    samples: Iterator[Sample], keys: TextIO | None, interval_s: float, stop: _Stop
) -> Iterator[Sample]:
    """``samples``, but waiting for keys between them instead of sleeping."""
    while not stop.requested:
        started = time.monotonic()
        try:
            s = next(samples)
        except StopIteration:
            return
        yield s
        # _samples waits too; with keys we wait here (it then finds its time used up).
        _wait(interval_s - (time.monotonic() - started), stop, keys)


@contextlib.contextmanager
def _cbreak(stream: TextIO) -> Iterator[TextIO | None]:
    """``stream`` in cbreak mode (keys without Enter, no echo), restored on exit;
    None when it is not a terminal (then only Ctrl-C quits)."""
    if not stream.isatty():
        yield None
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield stream
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
