"""``python -m producer load``: the workshop's ``invoke-test``, through the queue.

``--iters N`` transfers between two distinct random accounts in ``1..K``
(``--accounts``) for 0.01 to 10.00 each, every one with its own uuid4 ``transfer_id``,
go on the queue in SendMessageBatch calls of 10 from ``--threads T`` threads, each
with a client of its own; a progress bar on stderr shows the send rate. The workload
is drawn lazily from one random generator (``--seed`` makes it repeatable, ids aside),
so memory stays flat for large N.

Batches go out through :class:`producer.client.TransferClient` (the client a Python
producer uses): entries SQS refuses within a batch are resent a few times, then counted
as not sent; a batch call that fails outright stops the run.

With ``--wait`` it then polls ``transfer_results`` for the ids it sent until each has a
result or ``--timeout`` passes, and prints the STATS block of
:func:`producer.stats.format_load_stats`. It only produces: something else (the workers)
must consume meanwhile, and on moto, which slows down sharply as its queue grows,
that is what keeps the queue shallow.

Exit codes: 0 every transfer was sent (and with ``--wait`` has a result); 1 some were
not sent, or have no result in time; 2 the run could not start or sending broke off.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from producer.send import seconds
from producer.sqs import BATCH_SIZE, SQS_ERRORS
from worker.contract import INT32_MAX, TransferRequest
from worker.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from producer.cli import Subparsers
    from producer.client import TransferClient
    from producer.stats import LoadStats

DEFAULT_ITERS = 1000
DEFAULT_THREADS = 1
DEFAULT_ACCOUNTS = 1000
"""The workshop's invoke-test defaults."""
DEFAULT_TIMEOUT_S = 300.0
MAX_THREADS = 256
MAX_CENTS = 1000
"""Amounts are 0.01 to 10.00: 1 to 1,000 cents."""
POLL_S = 0.25


def register(subparsers: Subparsers) -> None:
    """``load --iters N --threads T --accounts K [--wait] [--json] [--timeout S] [--seed X]
    [--max-backlog M]``."""
    from producer.cli import _positive_int

    cmd = subparsers.add_parser(
        "load",
        help="send N random transfers from T threads; --wait reports what became of them",
        description="Send N transfers between random distinct accounts in 1..K, amounts "
        "0.01-10.00, in batches of 10 from T threads. With --wait, wait for their results "
        "and print outcomes, end-to-end and transaction times, retries and throughput.",
    )
    cmd.add_argument(
        "--iters",
        type=_positive_int,
        default=DEFAULT_ITERS,
        metavar="N",
        help=f"transfers to send (default: {DEFAULT_ITERS})",
    )
    cmd.add_argument(
        "--threads",
        type=_threads,
        default=DEFAULT_THREADS,
        metavar="T",
        help=f"sending threads (default: {DEFAULT_THREADS})",
    )
    cmd.add_argument(
        "--accounts",
        type=_accounts,
        default=DEFAULT_ACCOUNTS,
        metavar="K",
        help=f"account ids 1..K (default: {DEFAULT_ACCOUNTS})",
    )
    cmd.add_argument("--wait", action="store_true", help="wait for the results and report them")
    cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")
    cmd.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"longest wait for results (default: {DEFAULT_TIMEOUT_S:g} s)",
    )
    cmd.add_argument(
        "--seed", type=int, default=None, metavar="X", help="seed for accounts and amounts"
    )
    cmd.add_argument(
        "--max-backlog",
        type=_positive_int,
        default=None,
        metavar="M",
        help="pause sending while more than M messages wait on the queue "
        "(flow control; moto slows down sharply as its queue grows)",
    )
    cmd.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --wait: also write an HTML report of the run's window (see producer report)",
    )
    cmd.set_defaults(handler=run_load)


def run_load(args: argparse.Namespace, settings: Settings) -> int:
    """Send, optionally wait, and print the SENT block (and STATS) or one JSON object."""
    from producer.cli import EXIT_NO, EXIT_OK, _fail
    from producer.client import TransferClient
    from producer.progress import ProgressBar
    from producer.sqs import QueueNotConfigured, queue_url, sqs_clients
    from producer.stats import format_load_stats, load_stats_as_dict, summarize_load

    if args.report is not None and not args.wait:
        return _fail("--report needs --wait (the report shows the run's results)")
    transfers = plan_transfers(args.iters, args.accounts, random.Random(args.seed))
    threads = min(args.threads, -(-args.iters // BATCH_SIZE))
    with ExitStack() as stack:
        try:
            sqs = sqs_clients(settings, threads)
            url = queue_url(settings, sqs[0])
            # One client per thread (each with its own HTTP connections); the first one
            # also reads the results.
            clients = [TransferClient(c, url, settings=settings) for c in sqs]
            stack.callback(clients[0].close)
            if args.wait:
                # Connected before sending: an unreachable database stops us with
                # nothing queued.
                clients[0].connect()
            gate = BacklogGate(sqs[0], url, args.max_backlog) if args.max_backlog else None
            with ProgressBar(args.iters, label="send", unit="msgs") as bar:
                report = send_transfers(clients, transfers, on_sent=bar.advance, gate=gate)
        except (QueueNotConfigured, SendAborted) as exc:
            return _fail(str(exc))
        except SQS_ERRORS as exc:
            return _fail(f"SQS: {exc}")
        if report.not_sent:
            print(
                f"warning: {len(report.not_sent)} transfers were not sent "
                f"({_counts(report.not_sent_by_code())}); they will have no result",
                file=sys.stderr,
            )
        if not args.json:
            print(report.format(), flush=True)
        if not args.wait:
            if args.json:
                print(json.dumps(report.as_dict()))
            return EXIT_NO if report.not_sent else EXIT_OK
        with ProgressBar(len(report.sent), label="results", unit="results") as bar:
            found = clients[0].results(report.sent, wait=args.timeout, on_found=bar.advance)
    stats = summarize_load(
        list(found.values()), sent=len(report.sent), first_sent_at=report.started_at
    )
    if args.json:
        print(json.dumps({**report.as_dict(), **load_stats_as_dict(stats)}))
    else:
        print(format_load_stats(stats))
    if args.report is not None and (problem := write_report(args, settings, report, stats)):
        return _fail(problem)
    if stats.failed:
        print(
            f"{stats.failed} sent transfers have no result after {args.timeout:g} s "
            "(workers running? behind? messages in the DLQ?)",
            file=sys.stderr,
        )
    return EXIT_NO if stats.failed or report.not_sent else EXIT_OK


def write_report(
    args: argparse.Namespace, settings: Settings, report: SendReport, stats: LoadStats
) -> str | None:
    """``--report FILE``: the HTML report of the run's window; a problem, or None."""
    from producer.report import build_report, load_window

    shown = {
        "command": "producer load",
        "iters": args.iters,
        "threads": args.threads,
        "accounts": args.accounts,
        "max_backlog": args.max_backlog,
        "seed": args.seed,
        "sent": len(report.sent),
        "not_sent": len(report.not_sent),
        "send_rate_per_s": report.rate_per_s,
        "without_result": stats.failed,
    }
    window = load_window(report.started_at, stats.results.last_completed_at)
    try:
        page = build_report(settings, window, title="producer load", run_settings=shown)
    except ImportError:
        return "--report needs plotly: pip install 'dsql-transfers[producer]'"
    args.report.write_text(page, encoding="utf-8")
    print(f"wrote {args.report}", file=sys.stderr)
    return None


# --- the workload -----------------------------------------------------------------------


def plan_transfers(iters: int, accounts: int, rng: random.Random) -> Iterator[TransferRequest]:
    """``iters`` transfers between two distinct accounts in ``1..accounts``, for 0.01 to
    10.00 (two decimals), each with a new uuid4, drawn as they are consumed.

    ``rng`` draws only accounts and amounts: the ids are always new, because a
    repeated id is by design the same transfer again, applied once.
    """
    if accounts < 2:
        raise ValueError("transfers need at least two accounts")
    for _ in range(iters):
        payer = rng.randint(1, accounts)
        payee = rng.randint(1, accounts - 1)
        if payee >= payer:  # uniform over the other accounts
            payee += 1
        yield TransferRequest(
            transfer_id=uuid4(),
            payer_id=payer,
            payee_id=payee,
            amount=Decimal(rng.randint(1, MAX_CENTS)).scaleb(-2),
        )


# --- sending -----------------------------------------------------------------------------


class SendAborted(RuntimeError):
    """A SendMessageBatch call failed outright (after botocore's retries); sending
    stopped. ``sent`` transfers were on the queue by then."""

    def __init__(self, message: str, *, sent: int) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class SendReport:
    """What :func:`send_transfers` did."""

    requested: int
    sent: list[UUID]
    """Ids SQS accepted, in no particular order."""
    not_sent: dict[UUID, str]
    """Ids SQS refused even after resending, with its error code."""
    started_at: datetime
    """Wall-clock time just before the first send."""
    elapsed_s: float

    @property
    def rate_per_s(self) -> float | None:
        """Messages sent per second."""
        return len(self.sent) / self.elapsed_s if self.elapsed_s > 0 else None

    def not_sent_by_code(self) -> dict[str, int]:
        """Refused transfers per SQS error code, most frequent first."""
        return dict(Counter(self.not_sent.values()).most_common())

    def as_dict(self) -> dict[str, Any]:
        """Keys: ``requested``, ``sent``, ``not_sent``, ``not_sent_by_code``, ``send_s``,
        ``send_rate_per_s``, ``first_sent_at``."""
        return {
            "requested": self.requested,
            "sent": len(self.sent),
            "not_sent": len(self.not_sent),
            "not_sent_by_code": self.not_sent_by_code(),
            "send_s": self.elapsed_s,
            "send_rate_per_s": self.rate_per_s,
            "first_sent_at": self.started_at.isoformat(),
        }

    def format(self) -> str:
        """The SENT block, in the CLI's ``label  value`` lines."""
        from producer.cli import _line

        rate = self.rate_per_s
        codes = _counts(self.not_sent_by_code())
        return "\n".join(
            [
                "SENT",
                _line("requested", str(self.requested)),
                _line(
                    "sent",
                    f"{len(self.sent)} in {self.elapsed_s:.3f} s"
                    + ("" if rate is None else f" ({rate:,.1f} msgs/s)"),
                ),
                _line("not sent", f"{len(self.not_sent)}  {codes}".rstrip()),
            ]
        )


def send_transfers(
    clients: Sequence[TransferClient],
    transfers: Iterable[TransferRequest],
    *,
    on_sent: Callable[[int], None] | None = None,
    gate: BacklogGate | None = None,
) -> SendReport:
    """Send ``transfers`` in batches of 10, one thread per client, until none are left.

    Threads take the next 10 transfers from the shared iterator, so the workload is
    drawn in one order whatever the thread count; each batch goes out through
    :meth:`TransferClient.send_batch` (the client's partial-failure retries).
    ``on_sent(n)`` is called from the sending threads after each batch (a progress
    bar's ``advance``). Raises :class:`SendAborted` when a batch call fails outright;
    the other threads finish the batch they are sending and stop.
    """
    source = iter(transfers)
    source_lock = threading.Lock()
    results_lock = threading.Lock()
    stop = threading.Event()
    requested = 0
    sent: list[UUID] = []
    not_sent: dict[UUID, str] = {}

    def take() -> list[TransferRequest]:
        nonlocal requested
        with source_lock:
            batch = list(islice(source, BATCH_SIZE))
            requested += len(batch)
            return batch

    def run(client: TransferClient) -> None:
        while not stop.is_set():
            if gate is not None:
                gate.wait(stop)
            if not (batch := take()):
                break
            try:
                outcome = client.send_batch(batch)
            except BaseException:
                stop.set()
                raise
            with results_lock:
                sent.extend(outcome.sent)
                not_sent.update(outcome.not_sent)
            if on_sent is not None and outcome.sent:
                on_sent(len(outcome.sent))
            if gate is not None:
                gate.sent(len(outcome.sent))

    started_at = datetime.now(UTC)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients), thread_name_prefix="send") as pool:
        futures = [pool.submit(run, client) for client in clients]
    for future in futures:
        error = future.exception()
        if isinstance(error, SQS_ERRORS):
            raise SendAborted(
                f"sending stopped, SQS: {error} ({len(sent)} transfers were sent before)",
                sent=len(sent),
            ) from error
        if error is not None:
            raise error
    return SendReport(
        requested=requested,
        sent=sent,
        not_sent=not_sent,
        started_at=started_at,
        elapsed_s=time.perf_counter() - started,
    )


class BacklogGate:
    """Flow control: hold senders while more than ``limit`` messages wait on the queue.

    Shared by the sending threads; the queue depth (ApproximateNumberOfMessages) is
    asked at most once per ``refresh_s`` whatever the thread count. Approximate by
    nature: SQS's count lags, and threads already past the gate still send.
    """

    def __init__(self, client: SQSClient, url: str, limit: int, refresh_s: float = 0.05) -> None:
        self._client = client
        self._url = url
        self.limit = limit
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._depth = 0
        self._asked_at = -math.inf

    def wait(self, stop: threading.Event) -> None:
        """Return once the backlog is below the limit (or ``stop`` is set)."""
        while not stop.is_set() and self.depth() >= self.limit:
            stop.wait(self._refresh_s)

    def sent(self, count: int) -> None:
        """Count messages sent since the queue was last asked (they are waiting too)."""
        with self._lock:
            self._depth += count

    def depth(self) -> int:
        """Messages waiting: the queue's count at most ``refresh_s`` old, plus what was
        sent since."""
        with self._lock:
            if time.monotonic() - self._asked_at >= self._refresh_s:
                attrs = self._client.get_queue_attributes(
                    QueueUrl=self._url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                self._depth = int(attrs["ApproximateNumberOfMessages"])
                self._asked_at = time.monotonic()
            return self._depth


# --- helpers ------------------------------------------------------------------------------


def _threads(text: str) -> int:
    from producer.cli import _positive_int

    value = _positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS} threads, got {value}")
    return value


def _accounts(text: str) -> int:
    from producer.cli import _positive_int

    value = _positive_int(text)
    if not 2 <= value <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be between 2 and {INT32_MAX}, got {value}")
    return value


def _counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{key}={count}" for key, count in counts.items())
