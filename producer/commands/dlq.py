"""``python -m producer dlq peek | redrive``: look into the dead-letter queue, move it back.

``peek`` receives up to ``--max`` messages from ``DLQ_URL`` and prints, for each, its
id, sent time, receive count, the worker's ``error`` and ``source_message_id``
attributes and the body on one line; then it makes them visible again at once, so
looking does not hide them (:func:`producer.dlq.peek`).

``redrive`` moves messages back to the transfer queue (QUEUE_URL or QUEUE_NAME):
everything (no ``--max``) with an SQS message move task, which runs asynchronously in
SQS (the command prints its task handle and the DLQ's approximate depth); where the
endpoint has none, or with ``--max``, by copy, batch by batch, deleting from the DLQ
only what the queue accepted (:func:`producer.dlq.redrive`).

Exit codes: 0 done (or the move task started); 1 some messages could not be moved or
removed from the DLQ; 2 nothing could run (no DLQ_URL or queue, SQS unreachable or
refusing).
"""

from __future__ import annotations

import argparse
import json
import sys

from producer.console import (
    EXIT_CANNOT_RUN,
    EXIT_NO,
    EXIT_OK,
    Subparsers,
    add_json,
    bounded_int,
    fail,
    line,
    positive_int,
)
from producer.dlq import HOLD_S, Method, Peek, RedriveReport, peek, redrive
from producer.dlq.by_task import MAX_RATE
from producer.sqs import SQS_ERRORS
from worker.errors import QueueNotConfigured
from worker.settings import Settings
from worker.transport.sqs import queue_depth, queue_url, sqs_client

DEFAULT_PEEK = 10
BODY_PREVIEW = 200


def register(subparsers: Subparsers) -> None:
    """``dlq peek [--max N] [--json]`` and ``dlq redrive [--max N] [--rate R] [--json]``."""
    dlq = subparsers.add_parser(
        "dlq",
        help="peek at the dead-letter queue (DLQ_URL) or redrive it to the transfer queue",
        description="Inspect or redrive the dead-letter queue DLQ_URL.",
    )
    actions = dlq.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    peek_cmd = actions.add_parser(
        "peek",
        help="show up to N messages with their error, leaving them on the DLQ",
        description="Receive up to N messages with their attributes, print them, and make "
        "them visible again at once. SQS receive is sampled: not every message may show, "
        "and each peek raises the receive count of those it shows.",
    )
    peek_cmd.add_argument(
        "--max",
        dest="limit",
        type=positive_int,
        default=DEFAULT_PEEK,
        metavar="N",
        help=f"messages to show (default: {DEFAULT_PEEK})",
    )
    add_json(peek_cmd)
    peek_cmd.set_defaults(handler=run_peek)

    redrive_cmd = actions.add_parser(
        "redrive",
        help="move DLQ messages back to the transfer queue (QUEUE_URL / QUEUE_NAME)",
        description="Move every DLQ message back with an SQS message move task, or, where "
        "the endpoint has none or with --max, by receive, send and delete (a message "
        "leaves the DLQ only once the queue accepted its copy).",
    )
    redrive_cmd.add_argument(
        "--max",
        dest="limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="move at most N messages, by copy (default: all)",
    )
    redrive_cmd.add_argument(
        "--rate",
        type=bounded_int(MAX_RATE, "messages per second"),
        default=None,
        metavar="R",
        help=f"at most R messages per second, 1-{MAX_RATE} (default: as fast as SQS goes)",
    )
    add_json(redrive_cmd)
    redrive_cmd.set_defaults(handler=run_redrive)


def run_peek(args: argparse.Namespace, settings: Settings) -> int:
    """Print up to ``--max`` DLQ messages; exit 0 even when there are none."""
    if not settings.dlq_url:
        return fail("no dead-letter queue: set DLQ_URL")
    try:
        client = sqs_client(settings)
        depth = queue_depth(client, settings.dlq_url).visible
        result = peek(client, settings.dlq_url, args.limit)
    except QueueNotConfigured as exc:
        return fail(str(exc))
    except SQS_ERRORS as exc:
        return fail(f"SQS: {exc}")
    if args.json:
        letters = [letter.as_dict() for letter in result.letters]
        print(
            json.dumps(
                {"dlq": settings.dlq_url, "approximate_messages": depth, "messages": letters}
            )
        )
    else:
        print(format_peek(settings.dlq_url, depth, result))
    if result.not_released:
        print(
            f"warning: {result.not_released} messages stay hidden for up to {HOLD_S} s "
            "(making them visible again failed)",
            file=sys.stderr,
        )
    return EXIT_OK


def run_redrive(args: argparse.Namespace, settings: Settings) -> int:
    """Redrive and print the report; see the module docstring for the exit codes."""
    if not settings.dlq_url:
        return fail("no dead-letter queue: set DLQ_URL")
    try:
        client = sqs_client(settings)
        url = queue_url(settings, client)
    except QueueNotConfigured as exc:
        return fail(str(exc))
    except SQS_ERRORS as exc:
        return fail(f"SQS: {exc}")
    if url == settings.dlq_url:
        return fail("DLQ_URL is the transfer queue itself")
    try:
        report = redrive(client, settings.dlq_url, url, limit=args.limit, rate=args.rate)
    except SQS_ERRORS as exc:
        return fail(f"SQS: {exc}")
    if report.fallback_reason:
        print(
            f"StartMessageMoveTask is not available here ({report.fallback_reason}): "
            "moving by receive, send and delete",
            file=sys.stderr,
        )
    print(
        json.dumps(report.as_dict()) if args.json else format_redrive(settings.dlq_url, url, report)
    )
    if report.error:
        print(f"error: SQS: {report.error}", file=sys.stderr)
        if not report.moved:
            return EXIT_CANNOT_RUN
    return EXIT_OK if report.complete else EXIT_NO


def format_peek(dlq_url: str, depth: int, result: Peek) -> str:
    """A header, then one block per message; the body escaped onto one line."""
    lines = [f"DLQ {dlq_url}: ~{depth} messages, {len(result.letters)} shown (sampled)"]
    for letter in result.letters:
        m = letter.message
        lines.append(f"message {m.message_id}")
        lines.append(line("sent", m.sent_at.isoformat(sep=" ") if m.sent_at else "-"))
        lines.append(line("receive count", str(m.receive_count)))
        if m.group_id is not None:
            lines.append(line("group", m.group_id))
        lines.append(line("error", one_line(letter.error) if letter.error else "-"))
        lines.append(line("source message", letter.source_message_id or "-"))
        lines.append(line("body", one_line(m.body, BODY_PREVIEW)))
    return "\n".join(lines)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with control characters escaped (``\\n``), cut to ``limit`` with ``...``."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is not None and len(flat) > limit:
        return flat[:limit] + "..."
    return flat


def format_redrive(dlq_url: str, url: str, report: RedriveReport) -> str:
    """``REDRIVE dlq -> queue`` and one ``label  value`` line per figure."""
    lines = [f"REDRIVE {dlq_url} -> {url}"]
    if report.method is Method.MOVE_TASK:
        lines += [
            line("method", "move task (StartMessageMoveTask, runs in SQS)"),
            line("task handle", report.task_handle or "-"),
            line("to move", f"~{report.approximate_to_move}"),
            line(
                "follow with", f"aws sqs list-message-move-tasks --source-arn {report.source_arn}"
            ),
        ]
        return "\n".join(lines)
    by_code = ", ".join(f"{code} {n}" for code, n in sorted(report.not_moved.items()))
    not_moved = sum(report.not_moved.values())
    lines += [
        line("method", "copy (receive, send, delete)"),
        line("moved", str(report.moved)),
        line("not moved", f"{not_moved} ({by_code})" if by_code else "0"),
        line("not deleted", str(report.not_deleted)),
    ]
    return "\n".join(lines)
