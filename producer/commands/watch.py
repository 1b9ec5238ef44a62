"""``python -m producer watch``: a live view of the ledger and its queues.

Every ``--interval`` seconds (default 1) it takes a :func:`producer.watch.sample` of
the results completed in the last ``--window`` seconds (default 10) and of the queue
depths: results per second by outcome, retries, latency percentiles, the queue's
waiting and in-flight messages and the DLQ's depth.

On a terminal it draws one screen with ``rich`` (redrawn in place, so it works over
SSH in any terminal that ``ls --color`` works in) and quits on ``q`` or Ctrl-C,
leaving the terminal as it was. When stdout is not a terminal (a pipe, a log file) it
prints one plain line per sample instead, ``--count N`` lines then exits (default:
until interrupted). Each sample is one query over the window: keep ``--interval`` at a
few seconds against a big production table (see README, "Watching a run").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, TextIO

import psycopg

from producer.console import EXIT_OK, Subparsers, fail, seconds
from producer.sqs import SQS_ERRORS, sqs_clients
from producer.watch import Sample, plain_line, render, sample
from worker.db import connect
from worker.errors import QueueNotConfigured
from worker.settings import Settings
from worker.transport.sqs import queue_url

DEFAULT_INTERVAL_S = 1.0
DEFAULT_WINDOW_S = 10.0


def register(subparsers: Subparsers) -> None:
    """``watch [--interval S] [--window S] [--count N]``."""
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
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Sample and draw until told to stop; exit 0 on q, Ctrl-C, SIGTERM or --count."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return fail("watch needs rich: pip install 'dsql-transfers[producer]'")
    sqs, url = None, None
    if settings.queue_url or settings.queue_name or settings.dlq_url:
        try:
            sqs = sqs_clients(settings)[0]
            url = queue_url(settings, sqs) if settings.queue_url or settings.queue_name else None
        except QueueNotConfigured as exc:
            return fail(str(exc))
        except SQS_ERRORS as exc:
            return fail(f"SQS: {exc}")
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
