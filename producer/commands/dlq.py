"""``python -m producer dlq peek | redrive``: look into the dead-letter queue, move it back.

``peek`` receives up to ``--max`` messages from ``DLQ_URL`` and prints, for each, its
id, sent time, receive count, the worker's ``error`` and ``source_message_id``
attributes and the body on one line; then it makes them visible again at once
(ChangeMessageVisibility 0, in batches), so looking does not hide them. The receive
holds them for :data:`HOLD_S` only, the safety net should the release never happen.
SQS receives are sampled and approximate: a peek may not show every message even
below ``--max`` (in-flight ones are invisible; FIFO groups are locked while one of
their messages is out), and every peek raises the peeked messages'
ApproximateReceiveCount.

``redrive`` moves messages back to the transfer queue (QUEUE_URL or QUEUE_NAME):

- Everything (no ``--max``): an SQS message move task (StartMessageMoveTask, DLQ ARN
  to queue ARN, optionally ``--rate`` messages per second). It runs asynchronously in
  SQS; the command prints its task handle and the DLQ's approximate depth.
- Where the endpoint has no move task (moto, older emulators; see
  :func:`unsupported_answer`) or with ``--max`` (a task always moves everything): a
  copy, batch by batch: receive 10, send them to the queue, and delete from the DLQ
  only the entries SQS accepted, never before. Refused ones are made visible again at
  the end of the run (not during it, so one run does not loop on them).

A copy keeps the body byte for byte and the message attributes except the worker's
diagnostics (``error``, ``source_message_id``, ``source_queue``): they describe the
DLQ copy, and a redriven message that fails again gets fresh ones from the worker. On
a FIFO queue the copy keeps the message group (or uses the payer, as the producer does)
and is deduplicated by its DLQ message id: never by the original's deduplication id,
which SQS would still remember for 5 minutes and silently drop. A copy can happen
twice (a delete that fails after its send succeeded): harmless, a transfer id is
applied once.

Exit codes: 0 done (or the move task started); 1 some messages could not be moved or
removed from the DLQ; 2 nothing could run (no DLQ_URL or queue, SQS unreachable or
refusing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from producer.sqs import SQS_ERRORS, is_fifo, send_entries
from worker.contract import parse_body
from worker.dispatch import Message
from worker.errors import MalformedRequest, QueueNotConfigured
from worker.settings import Settings
from worker.transport.sqs import (
    BATCH,
    DLQ_ATTRIBUTES,
    ERROR,
    SOURCE_MESSAGE_ID,
    SOURCE_QUEUE,
    queue_url,
    sqs_client,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        StartMessageMoveTaskRequestTypeDef,
    )

    from producer.cli import Subparsers

DEFAULT_PEEK = 10
HOLD_S = 30
"""Visibility timeout of our receives: how long a message stays hidden if we die."""
RECEIVE_WAIT_S = 1
"""A (short) long poll asks every SQS server, so an empty answer means none visible."""
BODY_PREVIEW = 200
MAX_RATE = 500
"""StartMessageMoveTask's upper bound for MaxNumberOfMessagesPerSecond."""
UNSUPPORTED_CODES = frozenset(
    {
        "InvalidAction",
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "NotImplemented",
        "NotImplementedException",
        "InternalFailure",
    }
)
UNSUPPORTED_PHRASES = (
    "not implemented",
    "not yet implemented",
    "not supported",
    "must be configured as a dead letter queue",
)


class MoveTaskUnsupported(Exception):
    """The endpoint cannot run StartMessageMoveTask for this DLQ: copy instead."""


class Method(StrEnum):
    """How ``redrive`` moved the messages."""

    MOVE_TASK = "move_task"
    COPY = "copy"


# --- peek -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ message with the diagnostics the worker attached (None when absent, e.g.
    for a message the queue's redrive policy moved)."""

    message: Message
    error: str | None
    source_message_id: str | None
    source_queue: str | None

    @classmethod
    def from_sqs(cls, raw: MessageTypeDef) -> DeadLetter:
        """From a ``receive_message`` entry received with all attributes."""
        attributes = raw.get("MessageAttributes", {})

        def text(name: str) -> str | None:
            return attributes[name].get("StringValue") if name in attributes else None

        return cls(
            message=Message.from_sqs(dict(raw)),
            error=text(ERROR),
            source_message_id=text(SOURCE_MESSAGE_ID),
            source_queue=text(SOURCE_QUEUE),
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: every field, the whole body."""
        m = self.message
        return {
            "message_id": m.message_id,
            "sent_at": m.sent_at.isoformat() if m.sent_at else None,
            "receive_count": m.receive_count,
            "group_id": m.group_id,
            "error": self.error,
            "source_message_id": self.source_message_id,
            "source_queue": self.source_queue,
            "body": m.body,
        }


@dataclass(frozen=True)
class Peek:
    """What a peek saw, and how many of them it failed to make visible again."""

    letters: list[DeadLetter]
    not_released: int


def peek(client: SQSClient, dlq_url: str, limit: int) -> Peek:
    """Receive up to ``limit`` messages, then make every one visible again at once."""
    raws: list[MessageTypeDef] = []
    handles: list[str] = []
    try:
        while len(raws) < limit:
            batch = _receive(client, dlq_url, min(BATCH, limit - len(raws)))
            handles += [m["ReceiptHandle"] for m in batch]
            seen = {m["MessageId"] for m in raws}
            # A peek longer than HOLD_S receives its first messages again.
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                break
            raws += fresh
    finally:
        not_released = release(client, dlq_url, handles)
    return Peek([DeadLetter.from_sqs(m) for m in raws], not_released)


def approximate_depth(client: SQSClient, url: str) -> int:
    """ApproximateNumberOfMessages: visible messages, as SQS estimates them."""
    attrs = client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def release(client: SQSClient, url: str, handles: Sequence[str]) -> int:
    """Make received messages visible now; returns how many could not be (they come
    back by themselves after :data:`HOLD_S`)."""
    failed = 0
    for start in range(0, len(handles), BATCH):
        chunk = handles[start : start + BATCH]
        try:
            response = client.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(chunk)
                ],
            )
        except SQS_ERRORS:
            failed += len(chunk)
        else:
            failed += len(response.get("Failed", []))
    return failed


def format_peek(dlq_url: str, depth: int, result: Peek) -> str:
    """A header, then one block per message; the body escaped onto one line."""
    from producer.cli import _line

    lines = [f"DLQ {dlq_url}: ~{depth} messages, {len(result.letters)} shown (sampled)"]
    for letter in result.letters:
        m = letter.message
        lines.append(f"message {m.message_id}")
        lines.append(_line("sent", m.sent_at.isoformat(sep=" ") if m.sent_at else "-"))
        lines.append(_line("receive count", str(m.receive_count)))
        if m.group_id is not None:
            lines.append(_line("group", m.group_id))
        lines.append(_line("error", one_line(letter.error) if letter.error else "-"))
        lines.append(_line("source message", letter.source_message_id or "-"))
        lines.append(_line("body", one_line(m.body, BODY_PREVIEW)))
    return "\n".join(lines)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with control characters escaped (``\\n``), cut to ``limit`` with ``...``."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is not None and len(flat) > limit:
        return flat[:limit] + "..."
    return flat


# --- redrive ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedriveReport:
    """What ``redrive`` did. ``moved`` is None for a move task: SQS moves asynchronously."""

    method: Method
    moved: int | None = 0
    not_moved: dict[str, int] = field(default_factory=dict)
    """Messages left on the DLQ because SQS refused their copy, by error code."""
    not_deleted: int = 0
    """Copied to the queue but still on the DLQ: the delete failed (they come back)."""
    task_handle: str | None = None
    source_arn: str | None = None
    approximate_to_move: int | None = None
    fallback_reason: str | None = None
    """Why a copy was made instead of a move task (None: a task, or ``--max``)."""
    error: str | None = None
    """An SQS call that failed outright and stopped the copy."""

    @property
    def complete(self) -> bool:
        """Everything taken from the DLQ arrived on the queue and left the DLQ."""
        return not self.not_moved and not self.not_deleted and self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "method": self.method.value,
            "moved": self.moved,
            "not_moved": sum(self.not_moved.values()),
            "not_moved_by_code": self.not_moved,
            "not_deleted": self.not_deleted,
            "task_handle": self.task_handle,
            "source_arn": self.source_arn,
            "approximate_to_move": self.approximate_to_move,
            "fallback_reason": self.fallback_reason,
            "error": self.error,
        }


def redrive(
    client: SQSClient,
    dlq_url: str,
    queue_url: str,
    *,
    limit: int | None = None,
    rate: int | None = None,
) -> RedriveReport:
    """Move up to ``limit`` (None: all) DLQ messages to ``queue_url``: with a move task
    when moving all and the endpoint has one, else by copy (see the module docstring).

    Raises botocore's error when SQS refuses the move task for another reason than not
    having it (no permission, for one), or an ARN cannot be read.
    """
    reason = None
    if limit is None:
        try:
            return move_by_task(client, dlq_url, queue_url, rate=rate)
        except MoveTaskUnsupported as exc:
            reason = str(exc)
    report = move_by_copy(client, dlq_url, queue_url, limit=limit, rate=rate)
    return replace(report, fallback_reason=reason)


def move_by_task(
    client: SQSClient, dlq_url: str, queue_url: str, *, rate: int | None = None
) -> RedriveReport:
    """Start an SQS message move task from the DLQ to the queue.

    Raises :class:`MoveTaskUnsupported` when the endpoint answers that it has none.
    """
    dlq = client.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn", "ApproximateNumberOfMessages"]
    )["Attributes"]
    destination = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    request: StartMessageMoveTaskRequestTypeDef = {
        "SourceArn": dlq["QueueArn"],
        "DestinationArn": destination,
    }
    if rate is not None:
        request["MaxNumberOfMessagesPerSecond"] = rate
    _fail_fast_when_unsupported(client)
    try:
        response = client.start_message_move_task(**request)
    except NotImplementedError as exc:  # moto in-process (mock_aws) raises it as is
        raise MoveTaskUnsupported(str(exc)) from None
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if unsupported_answer(status, code, message):
            raise MoveTaskUnsupported(_summary(status, code, message)) from None
        raise
    return RedriveReport(
        method=Method.MOVE_TASK,
        moved=None,
        task_handle=response["TaskHandle"],
        source_arn=dlq["QueueArn"],
        approximate_to_move=int(dlq.get("ApproximateNumberOfMessages", "0")),
    )


def unsupported_answer(status: int, code: str, message: str) -> bool:
    """Whether an answer to StartMessageMoveTask means "not here", so a copy should do.

    moto answers 500 (its server) or raises NotImplementedError (in process); other
    emulators InvalidAction, UnsupportedOperation or a 501 "not yet implemented"; SQS
    itself refuses a source that is no queue's dead-letter target. A 5xx from real SQS
    is transient, and a copy is then a correct, slower way to the same end. Refusals
    such as AccessDenied or a missing queue are reported, not worked around.
    """
    text = " ".join(message.lower().replace("-", " ").split())
    return (
        status >= 500
        or code in UNSUPPORTED_CODES
        or any(phrase in text for phrase in UNSUPPORTED_PHRASES)
    )


def _fail_fast_when_unsupported(client: SQSClient) -> None:
    # The shared client retries 5xx answers with backoff (about 8 s over 4 retries); an
    # endpoint without the action answers 5xx every time, so stop at the first one.
    # Raising from botocore's needs-retry event leaves the other operations alone.
    def check(response: tuple[Any, dict[str, Any]] | None = None, **_: Any) -> None:
        if response is None:
            return
        http, parsed = response
        error = parsed.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if http.status_code >= 400 and unsupported_answer(http.status_code, code, message):
            raise MoveTaskUnsupported(_summary(http.status_code, code, message))

    client.meta.events.register(
        "needs-retry.sqs.StartMessageMoveTask", check, unique_id="dlq-move-task-fail-fast"
    )


def _summary(status: int, code: str, message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    readable = first and not first.startswith("<") and len(first) <= 200
    return f"{code or 'error'} (HTTP {status})" + (f": {first}" if readable else "")


def move_by_copy(
    client: SQSClient,
    dlq_url: str,
    queue_url: str,
    *,
    limit: int | None = None,
    rate: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveReport:
    """Receive, send to the queue, delete what SQS accepted; up to ``limit`` messages.

    Every message is taken once per run: one received again (its hold ran out) is
    released untouched, and a batch of nothing new ends the run. SQS errors do not
    raise: the run stops, and the report says what was done and why it stopped.
    """
    fifo = is_fifo(queue_url)
    started = time.monotonic()
    taken = sent_total = not_deleted = 0
    not_moved: Counter[str] = Counter()
    seen: set[str] = set()
    hold: list[str] = []  # receipt handles to release at the end
    error: str | None = None
    try:
        while limit is None or taken < limit:
            want = BATCH if limit is None else min(BATCH, limit - taken)
            batch = _receive(client, dlq_url, want)
            fresh = [m for m in batch if m["MessageId"] not in seen]
            hold += [m["ReceiptHandle"] for m in batch if m["MessageId"] in seen]
            if not fresh:
                break
            seen.update(m["MessageId"] for m in fresh)
            taken += len(fresh)
            entries = [redrive_entry(str(i), m, fifo=fifo) for i, m in enumerate(fresh)]
            try:
                outcome = send_entries(client, queue_url, entries)
            except SQS_ERRORS as exc:
                # Possibly sent after all (a timeout): a later copy is then a duplicate.
                not_moved[_code(exc)] += len(fresh)
                hold += [m["ReceiptHandle"] for m in fresh]
                raise
            for entry_id, code in outcome.not_sent.items():
                not_moved[code] += 1
                hold.append(fresh[int(entry_id)]["ReceiptHandle"])
            sent = [fresh[int(entry_id)] for entry_id in outcome.sent]
            sent_total += len(sent)
            # Only now, and only what the queue accepted, leaves the DLQ.
            try:
                not_deleted += _delete(client, dlq_url, sent)
            except SQS_ERRORS:
                not_deleted += len(sent)
                raise
            if rate is not None:
                sleep(max(taken / rate - (time.monotonic() - started), 0))
    except SQS_ERRORS as exc:
        error = str(exc)
    finally:
        release(client, dlq_url, hold)
    return RedriveReport(
        method=Method.COPY,
        moved=sent_total - not_deleted,
        not_moved=dict(not_moved),
        not_deleted=not_deleted,
        error=error,
    )


def redrive_entry(
    entry_id: str, raw: MessageTypeDef, *, fifo: bool
) -> SendMessageBatchRequestEntryTypeDef:
    """The queue's copy of a DLQ message: same body, attributes minus the worker's
    diagnostics; on a FIFO queue the same group, deduplicated by the DLQ message id."""
    entry: SendMessageBatchRequestEntryTypeDef = {"Id": entry_id, "MessageBody": raw["Body"]}
    attributes: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in raw.get("MessageAttributes", {}).items():
        if name in DLQ_ATTRIBUTES:
            continue
        # Only the value that is set: SQS refuses the (unsupported) list values.
        kept: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            kept["BinaryValue"] = value["BinaryValue"]
        attributes[name] = kept
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo:
        entry["MessageGroupId"] = _group_id(raw)
        entry["MessageDeduplicationId"] = raw["MessageId"]
    return entry


def _group_id(raw: MessageTypeDef) -> str:
    group = raw.get("Attributes", {}).get("MessageGroupId")
    if group:
        return group
    try:  # a standard DLQ feeding a FIFO queue: group by payer, as the producer does
        return str(parse_body(raw["Body"], raw["MessageId"]).payer_id)
    except MalformedRequest:
        return "redrive"


def _receive(client: SQSClient, url: str, count: int) -> list[MessageTypeDef]:
    return client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=count,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
        VisibilityTimeout=HOLD_S,
        WaitTimeSeconds=RECEIVE_WAIT_S,
    ).get("Messages", [])


def _delete(client: SQSClient, url: str, messages: Sequence[MessageTypeDef]) -> int:
    """Delete ``messages`` (at most 10); returns how many SQS did not delete."""
    if not messages:
        return 0
    response = client.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ],
    )
    return len(response.get("Failed", []))


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


# --- the command --------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    """``dlq peek [--max N] [--json]`` and ``dlq redrive [--max N] [--rate R] [--json]``."""
    from producer.cli import _positive_int

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
        type=_positive_int,
        default=DEFAULT_PEEK,
        metavar="N",
        help=f"messages to show (default: {DEFAULT_PEEK})",
    )
    peek_cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")
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
        type=_positive_int,
        default=None,
        metavar="N",
        help="move at most N messages, by copy (default: all)",
    )
    redrive_cmd.add_argument(
        "--rate",
        type=_rate,
        default=None,
        metavar="R",
        help=f"at most R messages per second, 1-{MAX_RATE} (default: as fast as SQS goes)",
    )
    redrive_cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")
    redrive_cmd.set_defaults(handler=run_redrive)


def run_peek(args: argparse.Namespace, settings: Settings) -> int:
    """Print up to ``--max`` DLQ messages; exit 0 even when there are none."""
    from producer.cli import EXIT_OK, _fail

    if not settings.dlq_url:
        return _fail("no dead-letter queue: set DLQ_URL")
    try:
        client = sqs_client(settings)
        depth = approximate_depth(client, settings.dlq_url)
        result = peek(client, settings.dlq_url, args.limit)
    except QueueNotConfigured as exc:
        return _fail(str(exc))
    except SQS_ERRORS as exc:
        return _fail(f"SQS: {exc}")
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
    from producer.cli import EXIT_CANNOT_RUN, EXIT_NO, EXIT_OK, _fail

    if not settings.dlq_url:
        return _fail("no dead-letter queue: set DLQ_URL")
    try:
        client = sqs_client(settings)
        url = queue_url(settings, client)
    except QueueNotConfigured as exc:
        return _fail(str(exc))
    except SQS_ERRORS as exc:
        return _fail(f"SQS: {exc}")
    if url == settings.dlq_url:
        return _fail("DLQ_URL is the transfer queue itself")
    try:
        report = redrive(client, settings.dlq_url, url, limit=args.limit, rate=args.rate)
    except SQS_ERRORS as exc:
        return _fail(f"SQS: {exc}")
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


def format_redrive(dlq_url: str, url: str, report: RedriveReport) -> str:
    """``REDRIVE dlq -> queue`` and one ``label  value`` line per figure."""
    from producer.cli import _line

    lines = [f"REDRIVE {dlq_url} -> {url}"]
    if report.method is Method.MOVE_TASK:
        lines += [
            _line("method", "move task (StartMessageMoveTask, runs in SQS)"),
            _line("task handle", report.task_handle or "-"),
            _line("to move", f"~{report.approximate_to_move}"),
            _line(
                "follow with", f"aws sqs list-message-move-tasks --source-arn {report.source_arn}"
            ),
        ]
        return "\n".join(lines)
    by_code = ", ".join(f"{code} {n}" for code, n in sorted(report.not_moved.items()))
    not_moved = sum(report.not_moved.values())
    lines += [
        _line("method", "copy (receive, send, delete)"),
        _line("moved", str(report.moved)),
        _line("not moved", f"{not_moved} ({by_code})" if by_code else "0"),
        _line("not deleted", str(report.not_deleted)),
    ]
    return "\n".join(lines)


def _rate(text: str) -> int:
    """argparse type: messages per second, 1 to :data:`MAX_RATE`."""
    from producer.cli import _positive_int

    value = _positive_int(text)
    if value > MAX_RATE:
        raise argparse.ArgumentTypeError(f"at most {MAX_RATE} messages per second, got {value}")
    return value
