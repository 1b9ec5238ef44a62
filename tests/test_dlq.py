"""``producer dlq peek`` and ``producer dlq redrive``: moto's SQS over HTTP.

DLQ messages are put there the way the worker does (:class:`worker.transport.sqs.DeadLetters`);
where a consumer is needed the real worker runs in-process
(:func:`tests.helpers.running_worker`). moto has no StartMessageMoveTask, so the move
task path runs against :class:`MoveTaskClient`, a test double around a real client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from botocore.exceptions import ClientError

from producer import dlq
from producer.cli import main
from producer.commands import dlq as dlq_command
from producer.results import connect_for_polling, wait_for_results
from sandbox.sqs import LocalSqs, Queues
from tests.support import running_worker
from worker.contract import encode_body
from worker.dispatch import Message
from worker.outcomes import Status
from worker.settings import Settings
from worker.transport.sqs import DeadLetters, queue_depth, receive_all, sqs_client

ROOT = Path(__file__).resolve().parent.parent


# --- fixtures and helpers (local_sqs, queues and sqs_settings come from conftest) -------


@pytest.fixture
def env(local_sqs: LocalSqs, queues: Queues, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a producer pointed at moto's queue and DLQ."""
    variables = {**local_sqs.env(), "QUEUE_URL": queues.queue_url, "DLQ_URL": queues.dlq_url}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for name in ("QUEUE_NAME", "AWS_ENDPOINT_URL", "AWS_PROFILE", "DSQL_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return variables


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def dead_letter(
    local_sqs: LocalSqs, queues: Queues, body: str, error: str, *, group: str | None = None
) -> Message:
    """Dead-letter ``body`` exactly as the worker does; returns the source message."""
    message = Message(message_id=str(uuid.uuid4()), body=body, receipt_handle="", group_id=group)
    DeadLetters(local_sqs.client(), queues.dlq_url, queues.queue_url).send(message, error)
    return message


def take_all(client: Any, url: str) -> list[Any]:
    """Receive (and hide, not delete) every visible message, with all attributes."""
    return receive_all(client, url, visibility_timeout_s=30, wait_s=1)


def bodies(messages: list[dict[str, Any]]) -> Counter[str]:
    """How many times each body occurs."""
    return Counter(m["Body"] for m in messages)


def client_error(status: int, code: str, message: str, operation: str) -> ClientError:
    """A botocore error answer, as botocore builds it."""
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


class MoveTaskClient:
    """Test double: a real moto client plus the StartMessageMoveTask moto lacks.

    Records each start call's arguments in ``calls`` and moves nothing; with
    ``refuse`` it raises that error instead. Every other operation is the real one.
    """

    def __init__(self, client: Any, refuse: ClientError | None = None) -> None:
        self._client = client
        self._refuse = refuse
        self.calls: list[dict[str, Any]] = []

    def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self._refuse is not None:
            raise self._refuse
        return {"TaskHandle": f"task-{len(self.calls)}"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RefusingSends:
    """Test double: a real client whose SendMessageBatch refuses chosen bodies.

    Refused entries are not sent and come back in ``Failed`` (not the sender's fault,
    so they are retried, and refused again). It checks every DeleteMessageBatch entry
    against the sends SQS accepted so far and records deletes of messages not (yet)
    sent in ``deleted_unsent``.
    """

    def __init__(self, client: Any, refuse: set[str]) -> None:
        self._client = client
        self._refuse = refuse
        self._body_of: dict[str, str] = {}  # receipt handle -> body
        self.accepted: Counter[str] = Counter()
        self.deleted: list[str] = []
        self.deleted_unsent: list[str] = []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = self._client.receive_message(**kwargs)
        for message in response.get("Messages", []):
            self._body_of[message["ReceiptHandle"]] = message["Body"]
        return response

    def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> dict[str, Any]:  # noqa: N803 - boto3's names
        keep = [e for e in Entries if e["MessageBody"] not in self._refuse]
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
            for e in Entries
            if e["MessageBody"] in self._refuse
        ]
        response: dict[str, Any] = {"Successful": []}
        if keep:
            response = self._client.send_message_batch(QueueUrl=QueueUrl, Entries=keep)
        by_id = {e["Id"]: e["MessageBody"] for e in keep}
        self.accepted.update(by_id[ok["Id"]] for ok in response.get("Successful", []))
        return {**response, "Failed": [*response.get("Failed", []), *failed]}

    def delete_message_batch(self, QueueUrl: str, Entries: list[Any]) -> dict[str, Any]:  # noqa: N803
        for entry in Entries:
            body = self._body_of[entry["ReceiptHandle"]]
            self.deleted.append(body)
            if not self.accepted[body]:
                self.deleted_unsent.append(body)
        return cast(
            dict[str, Any], self._client.delete_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def arn(client: Any, url: str) -> str:
    """The queue's ARN."""
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


# --- peek ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_peek_prints_each_message_with_its_error_and_leaves_it_on_the_dlq(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """peek shows id, receive count, error, source message id and a one-line body cut to
    200 characters, then every message is receivable again at once."""
    long_body = '{"note": "' + "x" * 150 + "\n" + "y" * 300 + '"}'
    sent = [
        dead_letter(local_sqs, queues, '{"payer_id": 0}', "payer_id: must be at least 1"),
        dead_letter(local_sqs, queues, long_body, "amount: field required"),
        dead_letter(local_sqs, queues, "not json", "invalid JSON: line 1\ncolumn 1"),
    ]
    code, out, _ = run(capsys, "dlq", "peek")
    assert code == 0
    header, *rest = out.split("\nmessage ")
    assert header == f"DLQ {queues.dlq_url}: ~3 messages, 3 shown (sampled)"
    blocks = {block.split("\n", 1)[0]: block.splitlines()[1:] for block in rest}
    assert len(blocks) == 3
    shown = {
        next(line for line in block if line.startswith("  source message")).split()[-1]: block
        for block in blocks.values()
    }
    assert set(shown) == {m.message_id for m in sent}
    errors = [
        "payer_id: must be at least 1",
        "amount: field required",
        r"invalid JSON: line 1\ncolumn 1",
    ]
    expected_bodies = [
        '{"payer_id": 0}',
        (long_body[:160] + "\\n" + "y" * 300)[:200] + "...",
        "not json",
    ]
    for message, error, body in zip(sent, errors, expected_bodies, strict=True):
        block = shown[message.message_id]
        assert f"  error           {error}" in block
        assert f"  body            {body}" in block
        assert "  receive count   1" in block
        assert block[0].startswith("  sent            20")
    again = take_all(local_sqs.client(), queues.dlq_url)
    assert bodies(again) == bodies([{"Body": m.body} for m in sent])
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in again} == {"2"}


def test_peek_json_in_a_real_process_shows_at_most_max(
    env: dict[str, str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """A real `python -m producer dlq peek --max 2 --json` prints one JSON object with 2
    of the 3 messages (whole bodies, error, source ids) and hides none of them."""
    errors = {}
    for i in range(3):
        message = dead_letter(local_sqs, queues, f'{{"n": {i}}}', f"error {i}")
        errors[message.message_id] = (message.body, f"error {i}")
    proc = subprocess.run(
        [sys.executable, "-m", "producer", "dlq", "peek", "--max", "2", "--json"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["dlq"], data["approximate_messages"]) == (queues.dlq_url, 3)
    assert len(data["messages"]) == 2
    for shown in data["messages"]:
        assert (shown["body"], shown["error"]) == errors[shown["source_message_id"]]
        assert shown["source_queue"] == queues.queue_url
        assert shown["receive_count"] == 1
        assert shown["sent_at"]
    assert len(take_all(local_sqs.client(), queues.dlq_url)) == 3


# --- redrive by copy (moto has no move task) ------------------------------------------------


@pytest.mark.usefixtures("env")
def test_redrive_moves_every_message_back_once_with_body_and_attributes(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """redrive --json: the DLQ ends empty, each body is on the queue exactly once, byte
    for byte, with its own attributes kept and the worker's diagnostics dropped."""
    client = local_sqs.client()
    sent = [
        dead_letter(local_sqs, queues, encode_body(1, 2, Decimal("1.50"), uuid.uuid4()), "e1"),
        dead_letter(local_sqs, queues, ' {"amount": "é"}\n\t', "e2"),
        dead_letter(local_sqs, queues, "same", "e3"),
        dead_letter(local_sqs, queues, "same", "e4"),
    ]
    # As the queue's redrive policy moves a message: with the producer's attributes.
    client.send_message(
        QueueUrl=queues.dlq_url,
        MessageBody="traced",
        MessageAttributes={
            "trace": {"DataType": "String", "StringValue": "t-1"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
            "error": {"DataType": "String", "StringValue": "stale"},
        },
    )
    code, out, err = run(capsys, "dlq", "redrive", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["method"], report["moved"], report["not_moved"]) == ("copy", 5, 0)
    assert report["fallback_reason"]
    assert "StartMessageMoveTask is not available here" in err
    assert take_all(client, queues.dlq_url) == []
    moved = take_all(client, queues.queue_url)
    assert bodies(moved) == bodies([{"Body": m.body} for m in sent]) + Counter(["traced"])
    for message in moved:
        if message["Body"] == "traced":
            assert message["MessageAttributes"] == {
                "trace": {"DataType": "String", "StringValue": "t-1"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
            }
        else:
            assert "MessageAttributes" not in message


@pytest.mark.usefixtures("env")
def test_redrive_max_moves_exactly_n(
    capsys: pytest.CaptureFixture[str], local_sqs: LocalSqs, queues: Queues
) -> None:
    """redrive --max 2 moves 2 of 5 messages and leaves the other 3 on the DLQ."""
    for i in range(5):
        dead_letter(local_sqs, queues, f"m{i}", "bad")
    code, out, _ = run(capsys, "dlq", "redrive", "--max", "2")
    assert code == 0
    assert out.splitlines()[0] == f"REDRIVE {queues.dlq_url} -> {queues.queue_url}"
    assert "  method          copy (receive, send, delete)" in out.splitlines()
    assert "  moved           2" in out.splitlines()
    client = local_sqs.client()
    on_queue, on_dlq = take_all(client, queues.queue_url), take_all(client, queues.dlq_url)
    assert (len(on_queue), len(on_dlq)) == (2, 3)
    assert bodies(on_queue) + bodies(on_dlq) == Counter(f"m{i}" for i in range(5))


@pytest.mark.usefixtures("env")
def test_redrive_deletes_only_what_the_queue_accepted_and_never_first(
    capsys: pytest.CaptureFixture[str],
    local_sqs: LocalSqs,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries SendMessageBatch fails stay on the DLQ, visible again at once; no DLQ
    delete ever precedes the accepted send of its message; exit 1."""
    for i in range(5):
        dead_letter(local_sqs, queues, f"m{i}", "bad")
    client = RefusingSends(local_sqs.client(), refuse={"m1", "m3"})
    monkeypatch.setattr(dlq_command, "sqs_client", lambda _settings: client)
    code, out, err = run(capsys, "dlq", "redrive", "--json")
    assert code == 1, err
    report = json.loads(out)
    assert (report["moved"], report["not_moved"]) == (3, 2)
    assert report["not_moved_by_code"] == {"InternalError": 2}
    assert client.deleted_unsent == []
    assert sorted(client.deleted) == ["m0", "m2", "m4"]
    real = local_sqs.client()
    assert bodies(take_all(real, queues.dlq_url)) == Counter(["m1", "m3"])
    assert bodies(take_all(real, queues.queue_url)) == Counter(["m0", "m2", "m4"])


def test_an_endpoint_without_move_tasks_is_asked_once_then_copied(
    local_sqs: LocalSqs, queues: Queues
) -> None:
    """moto's 5xx answer to StartMessageMoveTask is not retried: one request, then a copy."""
    client = sqs_client(Settings(aws_region="us-east-1"))
    requests: list[str] = []
    client.meta.events.register(
        "request-created.sqs.StartMessageMoveTask", lambda **_: requests.append("start")
    )
    dead_letter(local_sqs, queues, "m", "bad")
    report = dlq.redrive(client, queues.dlq_url, queues.queue_url)
    assert requests == ["start"]
    assert (report.method, report.moved) == (dlq.Method.COPY, 1)
    assert report.fallback_reason is not None
    assert "HTTP 500" in report.fallback_reason


def test_rate_spaces_out_the_copy(local_sqs: LocalSqs, queues: Queues) -> None:
    """--rate R: after taking N messages the copy has spent at least N / R seconds."""
    for i in range(3):
        dead_letter(local_sqs, queues, f"m{i}", "bad")
    slept: list[float] = []
    started = time.monotonic()
    report = dlq.move_by_copy(
        local_sqs.client(), queues.dlq_url, queues.queue_url, rate=2, sleep=slept.append
    )
    assert report.moved == 3
    spent_without_sleeping = time.monotonic() - started
    assert sum(slept) + spent_without_sleeping >= 1.5
    assert sum(slept) > 0


def test_fifo_redrive_keeps_the_group_and_dedups_by_the_dlq_message_id(
    local_sqs: LocalSqs, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On FIFO queues a copy keeps its message group and is deduplicated by its DLQ
    message id, never by the deduplication id it arrived with (real SQS remembers that
    one for 5 minutes and would drop the copy; moto does not, so the id is checked)."""
    fifo = local_sqs.create_queues(f"t-{uuid.uuid4().hex[:12]}", fifo=True)
    variables = {**local_sqs.env(), "QUEUE_URL": fifo.queue_url, "DLQ_URL": fifo.dlq_url}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QUEUE_NAME", raising=False)
    client = local_sqs.client()
    moved_by_policy = encode_body(7, 8, Decimal(1), uuid.uuid4())
    # As the queue's redrive policy moves a message: with its group and dedup id.
    client.send_message(
        QueueUrl=fifo.dlq_url,
        MessageBody=moved_by_policy,
        MessageGroupId="7",
        MessageDeduplicationId="d-1",
    )
    malformed = Message(message_id=str(uuid.uuid4()), body="{", receipt_handle="", group_id="9")
    DeadLetters(client, fifo.dlq_url, fifo.queue_url).send(malformed, "invalid JSON")
    on_dlq = {
        d.message.body: d.message.message_id for d in dlq.peek(client, fifo.dlq_url, 10).letters
    }
    assert set(on_dlq) == {moved_by_policy, "{"}

    code, out, err = run(capsys, "dlq", "redrive", "--json")
    assert code == 0, err
    assert json.loads(out)["moved"] == 2
    moved = {m["Body"]: m["Attributes"] for m in take_all(client, fifo.queue_url)}
    assert set(moved) == {moved_by_policy, "{"}
    assert moved[moved_by_policy]["MessageGroupId"] == "7"
    assert moved[moved_by_policy]["MessageDeduplicationId"] == on_dlq[moved_by_policy]
    assert moved["{"]["MessageGroupId"] == "9"
    assert moved["{"]["MessageDeduplicationId"] == on_dlq["{"]
    assert take_all(client, fifo.dlq_url) == []


# --- redrive with a move task (a test double: moto has none) ---------------------------------


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("rate", [None, 50])
def test_redrive_starts_a_move_task_from_the_dlq_arn_to_the_queue_arn(
    capsys: pytest.CaptureFixture[str],
    local_sqs: LocalSqs,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
    rate: int | None,
) -> None:
    """Where StartMessageMoveTask exists, redrive starts one (DLQ ARN -> queue ARN, the
    --rate as MaxNumberOfMessagesPerSecond), prints its handle and copies nothing."""
    dead_letter(local_sqs, queues, "m0", "bad")
    dead_letter(local_sqs, queues, "m1", "bad")
    client = MoveTaskClient(local_sqs.client())
    monkeypatch.setattr(dlq_command, "sqs_client", lambda _settings: client)
    code, out, _ = run(capsys, "dlq", "redrive", *(["--rate", str(rate)] if rate else []))
    assert code == 0
    expected = {
        "SourceArn": arn(client, queues.dlq_url),
        "DestinationArn": arn(client, queues.queue_url),
    }
    if rate:
        expected["MaxNumberOfMessagesPerSecond"] = rate
    assert client.calls == [expected]
    assert "  task handle     task-1" in out.splitlines()
    assert "  to move         ~2" in out.splitlines()
    assert len(take_all(local_sqs.client(), queues.dlq_url)) == 2
    assert take_all(local_sqs.client(), queues.queue_url) == []


@pytest.mark.usefixtures("env")
def test_redrive_max_copies_even_where_a_move_task_exists(
    capsys: pytest.CaptureFixture[str],
    local_sqs: LocalSqs,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A move task always moves everything, so --max copies instead and starts none."""
    dead_letter(local_sqs, queues, "m0", "bad")
    dead_letter(local_sqs, queues, "m1", "bad")
    client = MoveTaskClient(local_sqs.client())
    monkeypatch.setattr(dlq_command, "sqs_client", lambda _settings: client)
    code, out, _ = run(capsys, "dlq", "redrive", "--max", "1", "--json")
    assert code == 0
    assert client.calls == []
    assert json.loads(out)["fallback_reason"] is None
    assert len(take_all(local_sqs.client(), queues.queue_url)) == 1


@pytest.mark.usefixtures("env")
def test_a_move_task_refused_for_another_reason_is_reported_not_copied(
    capsys: pytest.CaptureFixture[str],
    local_sqs: LocalSqs,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AccessDenied on StartMessageMoveTask: exit 2 with the error, nothing copied."""
    dead_letter(local_sqs, queues, "m0", "bad")
    refusal = client_error(403, "AccessDenied", "not authorized", "StartMessageMoveTask")
    client = MoveTaskClient(local_sqs.client(), refuse=refusal)
    monkeypatch.setattr(dlq_command, "sqs_client", lambda _settings: client)
    code, out, err = run(capsys, "dlq", "redrive")
    assert (code, out) == (2, "")
    assert "AccessDenied" in err
    assert len(client.calls) == 1
    assert take_all(local_sqs.client(), queues.queue_url) == []
    assert len(take_all(local_sqs.client(), queues.dlq_url)) == 1


@pytest.mark.parametrize(
    ("status", "code", "message", "unsupported"),
    [
        (500, "500", "<!doctype html><title>500 Internal Server Error</title>", True),
        (501, "InternalFailure", "API action 'StartMessageMoveTask' not yet implemented", True),
        (400, "InvalidAction", "The action StartMessageMoveTask is not valid", True),
        (400, "UnsupportedOperation", "", True),
        (
            400,
            "InvalidParameterValue",
            "Source queue must be configured as a Dead Letter Queue.",
            True,
        ),
        (403, "AccessDenied", "not authorized to perform sqs:StartMessageMoveTask", False),
        (
            400,
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist",
            False,
        ),
        (
            400,
            "InvalidParameterValue",
            "Value 900 for MaxNumberOfMessagesPerSecond is invalid",
            False,
        ),
    ],
)
def test_unsupported_answers_are_told_from_refusals(
    status: int, code: str, message: str, unsupported: bool
) -> None:
    """Answers meaning "no move task here" fall back to a copy; refusals do not."""
    assert dlq.unsupported_answer(status, code, message) is unsupported


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("argv", "unset", "named"),
    [
        (["dlq", "peek"], "DLQ_URL", "DLQ_URL"),
        (["dlq", "redrive"], "DLQ_URL", "DLQ_URL"),
        (["dlq", "redrive"], "QUEUE_URL", "QUEUE_URL"),
        (["dlq"], None, "ACTION"),
    ],
)
def test_missing_configuration_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    unset: str | None,
    named: str,
) -> None:
    """No DLQ_URL, no queue, or no action: exit 2, nothing on stdout, the missing piece named."""
    if unset:
        monkeypatch.delenv(unset)
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert named in err


# --- with the real worker ----------------------------------------------------------------------


def test_peek_shows_the_parse_error_of_a_message_the_worker_dead_lettered(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    local_sqs: LocalSqs,
    queues: Queues,
    sqs_settings: Settings,
) -> None:
    """A malformed transfer sent to the queue is dead-lettered by the real worker; peek
    shows its body, the worker's error and the id it had on the queue."""
    body = '{"payer_id": 1, "payee_id": 2, "amount": "ten"}'
    sent_id = local_sqs.client().send_message(QueueUrl=queues.queue_url, MessageBody=body)[
        "MessageId"
    ]
    with running_worker(sqs_settings):
        deadline = time.monotonic() + 20
        depth = 0
        while depth == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            depth = queue_depth(local_sqs.client(), queues.dlq_url).visible
    code, out, _ = run(capsys, "dlq", "peek", "--json")
    assert code == 0
    (shown,) = json.loads(out)["messages"]
    assert (shown["body"], shown["source_message_id"]) == (body, sent_id)
    assert "amount" in shown["error"]


def test_a_redriven_transfer_is_applied_by_the_worker(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    local_sqs: LocalSqs,
    queues: Queues,
    sqs_settings: Settings,
    database_url: str,
) -> None:
    """A valid transfer on the DLQ (dead-lettered before a parser fix) is redriven and
    then committed by the real worker; the DLQ ends empty."""
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 100)")
    transfer_id = uuid.uuid4()
    dead_letter(
        local_sqs, queues, encode_body(1, 2, Decimal("12.50"), transfer_id), "amount: old parser"
    )
    code, _, err = run(capsys, "dlq", "redrive")
    assert code == 0, err
    with running_worker(sqs_settings), connect_for_polling(sqs_settings) as conn:
        found = wait_for_results(conn, [transfer_id], timeout_s=20)
    result = found[transfer_id]
    assert result.status is Status.COMMITTED
    assert result.payer_balance == Decimal("87.50")
    assert take_all(local_sqs.client(), queues.dlq_url) == []
