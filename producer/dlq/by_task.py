"""Redrive everything with an SQS message move task (StartMessageMoveTask).

The task runs asynchronously in SQS, from the DLQ's ARN to the queue's, optionally at
most ``rate`` messages per second; what is returned is its handle and the DLQ's
approximate depth. Where the endpoint has no move task (moto, older emulators; see
:func:`unsupported_answer`) :class:`MoveTaskUnsupported` says so, and
:func:`producer.dlq.redrive` copies instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from producer.dlq.report import Method, RedriveReport

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import StartMessageMoveTaskRequestTypeDef

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


def move_by_task(
    client: SQSClient, dlq_url: str, queue_url: str, *, rate: int | None = None
) -> RedriveReport:
    """Start an SQS message move task from the DLQ to the queue.

    Raises :class:`MoveTaskUnsupported` when the endpoint answers that it has none, and
    botocore's error when SQS refuses for another reason (no permission, for one) or an
    ARN cannot be read.
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
