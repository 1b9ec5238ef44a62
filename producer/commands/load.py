"""``python -m producer load``: the workshop's ``invoke-test``, through the queue.

``--iters N`` transfers between two distinct random accounts in ``1..K``
(``--accounts``) for 0.01 to 10.00 each, every one with its own uuid4 ``transfer_id``,
go on the queue in SendMessageBatch calls of 10 from ``--threads T`` threads, each
with a client of its own; a progress bar on stderr shows the send rate. The workload
and the sending are :mod:`producer.load`'s: drawn lazily from one random generator
(``--seed`` makes it repeatable, ids aside), so memory stays flat for large N; entries
SQS refuses within a batch are resent a few times, then counted as not sent; a batch
call that fails outright stops the run. ``--max-backlog M`` pauses the senders while
more than M messages wait on the queue.

With ``--wait`` it then polls ``transfer_results`` for the ids it sent until each has a
result or ``--timeout`` passes, and prints the STATS block of
:func:`producer.stats_format.format_load_stats` (``--report FILE`` also writes the HTML
report of the run's window). It only produces: something else (the workers) must
consume meanwhile, and on moto, which slows down sharply as its queue grows, that is
what keeps the queue shallow.

Exit codes: 0 every transfer was sent (and with ``--wait`` has a result); 1 some were
not sent, or have no result in time; 2 the run could not start or sending broke off.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from contextlib import ExitStack
from pathlib import Path

from producer.client import TransferClient
from producer.console import (
    EXIT_NO,
    EXIT_OK,
    Subparsers,
    add_json,
    add_timeout,
    bounded_int,
    fail,
    line,
    positive_int,
)
from producer.load import BacklogGate, SendAborted, SendReport, plan_transfers, send_transfers
from producer.progress import ProgressBar
from producer.report import build_report, load_window
from producer.sqs import SQS_ERRORS, sqs_clients
from producer.stats import LoadStats, summarize_load
from producer.stats_format import format_load_stats, load_stats_as_dict
from worker.contract import INT32_MAX
from worker.errors import QueueNotConfigured
from worker.settings import Settings
from worker.transport.sqs import BATCH, queue_url

DEFAULT_ITERS = 1000
DEFAULT_THREADS = 1
DEFAULT_ACCOUNTS = 1000
"""The workshop's invoke-test defaults."""
DEFAULT_TIMEOUT_S = 300.0
MAX_THREADS = 256


def register(subparsers: Subparsers) -> None:
    """``load --iters N --threads T --accounts K [--wait] [--json] [--timeout S] [--seed X]
    [--max-backlog M] [--report FILE]``."""
    cmd = subparsers.add_parser(
        "load",
        help="send N random transfers from T threads; --wait reports what became of them",
        description="Send N transfers between random distinct accounts in 1..K, amounts "
        "0.01-10.00, in batches of 10 from T threads. With --wait, wait for their results "
        "and print outcomes, end-to-end and transaction times, retries and throughput.",
    )
    cmd.add_argument(
        "--iters",
        type=positive_int,
        default=DEFAULT_ITERS,
        metavar="N",
        help=f"transfers to send (default: {DEFAULT_ITERS})",
    )
    cmd.add_argument(
        "--threads",
        type=bounded_int(MAX_THREADS, "threads"),
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
    add_json(cmd)
    add_timeout(cmd, DEFAULT_TIMEOUT_S, "results")
    cmd.add_argument(
        "--seed", type=int, default=None, metavar="X", help="seed for accounts and amounts"
    )
    cmd.add_argument(
        "--max-backlog",
        type=positive_int,
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
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Send, optionally wait, and print the SENT block (and STATS) or one JSON object."""
    if args.report is not None and not args.wait:
        return fail("--report needs --wait (the report shows the run's results)")
    transfers = plan_transfers(args.iters, args.accounts, random.Random(args.seed))
    threads = min(args.threads, -(-args.iters // BATCH))
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
            return fail(str(exc))
        except SQS_ERRORS as exc:
            return fail(f"SQS: {exc}")
        if report.not_sent:
            print(
                f"warning: {len(report.not_sent)} transfers were not sent "
                f"({_counts(report.not_sent_by_code())}); they will have no result",
                file=sys.stderr,
            )
        if not args.json:
            print(format_sent(report), flush=True)
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
        return fail(problem)
    if stats.failed:
        print(
            f"{stats.failed} sent transfers have no result after {args.timeout:g} s "
            "(workers running? behind? messages in the DLQ?)",
            file=sys.stderr,
        )
    return EXIT_NO if stats.failed or report.not_sent else EXIT_OK


def format_sent(report: SendReport) -> str:
    """The SENT block: requested, sent (with the send rate) and not sent by error code."""
    rate = report.rate_per_s
    codes = _counts(report.not_sent_by_code())
    return "\n".join(
        [
            "SENT",
            line("requested", str(report.requested)),
            line(
                "sent",
                f"{len(report.sent)} in {report.elapsed_s:.3f} s"
                + ("" if rate is None else f" ({rate:,.1f} msgs/s)"),
            ),
            line("not sent", f"{len(report.not_sent)}  {codes}".rstrip()),
        ]
    )


def write_report(
    args: argparse.Namespace, settings: Settings, report: SendReport, stats: LoadStats
) -> str | None:
    """``--report FILE``: the HTML report of the run's window; a problem, or None."""
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


def _accounts(text: str) -> int:
    value = positive_int(text)
    if not 2 <= value <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be between 2 and {INT32_MAX}, got {value}")
    return value


def _counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{key}={count}" for key, count in counts.items())
