"""``sandbox.sqs._fix_moto``'s send-path repair: SendMessage and SendMessageBatch no
longer compute moto's approximate message counts (each a scan of the queue), and moto
still deduplicates, validates, delays, redrives and reports attributes as before."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.sqs.models import Queue, sqs_backends

from sandbox.sqs import REGION, LocalSqs, _send_path, _SendPathAttributes

MOTO_ACCOUNT_ID = "123456789012"
"""moto's default account, the one its server uses for the fake credentials."""
DEPTH = 500
COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_not_visible",
    "approximate_number_of_messages_delayed",
)
CBD = "ContentBasedDeduplication"


def moto_queue(url: str) -> Queue:
    """moto's own object for the queue at ``url`` (its server runs in this process)."""
    queue: Queue = sqs_backends[MOTO_ACCOUNT_ID][REGION].queues[url.rsplit("/", 1)[1]]
    return queue


@pytest.fixture
def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every computation of one of a queue's three approximate counts, by name."""
    calls: list[str] = []
    for name in COUNTS:
        stock = vars(Queue)[name].fget

        def counted(queue: Queue, name: str = name, stock: Any = stock) -> int:
            calls.append(name)
            result: int = stock(queue)
            return result

        monkeypatch.setattr(Queue, name, property(counted))
    return calls


def entries(start: int, fifo: bool) -> list[dict[str, Any]]:
    """Ten batch entries with distinct bodies (group and dedup ids on a FIFO queue)."""
    rows: list[dict[str, Any]] = []
    for i in range(start, start + 10):
        row: dict[str, Any] = {"Id": f"m{i}", "MessageBody": f"body {i}"}
        if fifo:
            row |= {"MessageGroupId": str(i % 7), "MessageDeduplicationId": f"d{i}"}
        rows.append(row)
    return rows


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_a_send_at_depth_scans_nothing_and_the_counts_stay_right(
    local_sqs: LocalSqs, count_scans: list[str], fifo: bool
) -> None:
    """With DEPTH messages queued, one SendMessage and one SendMessageBatch of 10
    compute none of the approximate counts (stock moto computes all three 11 times on
    a standard queue, 64 times on a FIFO queue); GetQueueAttributes still computes
    each once, and they count every message sent."""
    sqs = local_sqs.client()
    url = local_sqs.create_queues(f"scan-{uuid.uuid4().hex[:8]}", fifo=fifo).queue_url
    for start in range(0, DEPTH, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=entries(start, fifo))
    count_scans.clear()

    single = {"MessageGroupId": "g", "MessageDeduplicationId": "single"} if fifo else {}
    sqs.send_message(QueueUrl=url, MessageBody="one more", **single)
    sqs.send_message_batch(QueueUrl=url, Entries=entries(DEPTH, fifo))
    assert count_scans == []

    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert sorted(count_scans) == sorted(COUNTS)  # the counter sees the stock path
    assert attributes["ApproximateNumberOfMessages"] == str(DEPTH + 11)
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "0"


@pytest.mark.parametrize(
    "attributes",
    [{}, {"ContentBasedDeduplication": "true"}, {"FifoQueue": "true"},
     {"FifoQueue": "true", "ContentBasedDeduplication": "true"}],
    ids=["standard", "standard-cbd", "fifo", "fifo-cbd"],
)  # fmt: skip
def test_the_send_path_reads_the_same_answer_as_the_full_attributes(
    local_sqs: LocalSqs, attributes: dict[str, str]
) -> None:
    """For every kind of queue, the send path's ContentBasedDeduplication is what
    the full attribute dict says (None on a standard queue, which lists no FIFO
    attributes, even if the flag was set); any other key fails loudly."""
    suffix = ".fifo" if attributes.get("FifoQueue") else ""
    name = f"same-{uuid.uuid4().hex[:8]}{suffix}"
    queue = moto_queue(
        local_sqs.client().create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    )
    send_path = _SendPathAttributes(queue)
    assert send_path.get(CBD) == queue.attributes.get(CBD)
    with pytest.raises(LookupError, match="DelaySeconds"):
        send_path.get("DelaySeconds")


def test_only_this_thread_and_this_queue_see_the_send_path_view(local_sqs: LocalSqs) -> None:
    """Inside the send path, the same queue read from another thread, another queue,
    or a queue with moto's own Lambda mappings still gives the full dict."""
    queues = local_sqs.create_queues(f"scope-{uuid.uuid4().hex[:8]}")
    queue, dlq = moto_queue(queues.queue_url), moto_queue(queues.dlq_url)
    seen: list[Any] = []
    with _send_path(queue):
        assert isinstance(queue.attributes, _SendPathAttributes)
        assert isinstance(dlq.attributes, dict)
        reader = threading.Thread(target=lambda: seen.append(queue.attributes))
        reader.start()
        reader.join()
    assert isinstance(seen[0], dict)
    assert "ApproximateNumberOfMessages" in seen[0]
    assert isinstance(queue.attributes, dict)

    queue.lambda_event_source_mappings = {"arn:aws:lambda:mapping": object()}  # type: ignore[dict-item]
    try:
        with _send_path(queue):
            assert isinstance(queue.attributes, dict)
    finally:
        queue.lambda_event_source_mappings = {}


def test_fifo_deduplication_and_validation_are_unchanged(local_sqs: LocalSqs) -> None:
    """Content-based deduplication drops a repeated body, an explicit dedup id drops a
    repeated id, and a FIFO send without a group, without a dedup id (no content-based
    deduplication) or with a delay is refused, in SendMessage and SendMessageBatch."""
    sqs = local_sqs.client()
    cbd = sqs.create_queue(
        QueueName=f"cbd-{uuid.uuid4().hex[:8]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    sqs.send_message_batch(
        QueueUrl=cbd,
        Entries=[{"Id": "a", "MessageBody": "same", "MessageGroupId": "g"},
                 {"Id": "b", "MessageBody": "other", "MessageGroupId": "g"}],
    )  # fmt: skip
    received = receive_all(sqs, cbd)
    assert [m["Body"] for m in received] == ["same", "other"]
    assert received[0]["Attributes"]["MessageDeduplicationId"] != ""

    plain = local_sqs.create_queues(f"dedup-{uuid.uuid4().hex[:8]}", fifo=True).queue_url
    for _ in range(2):
        sqs.send_message(
            QueueUrl=plain, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="id"
        )
    assert len(receive_all(sqs, plain)) == 1
    with pytest.raises(ClientError, match="MessageGroupId"):
        sqs.send_message(QueueUrl=plain, MessageBody="x", MessageDeduplicationId="id2")
    with pytest.raises(ClientError, match="ContentBasedDeduplication enabled"):
        sqs.send_message(QueueUrl=plain, MessageBody="x", MessageGroupId="g")
    with pytest.raises(ClientError, match="ContentBasedDeduplication enabled"):
        sqs.send_message_batch(
            QueueUrl=plain, Entries=[{"Id": "a", "MessageBody": "x", "MessageGroupId": "g"}]
        )
    with pytest.raises(ClientError, match="DelaySeconds"):
        sqs.send_message(
            QueueUrl=plain,
            MessageBody="x",
            MessageGroupId="g",
            MessageDeduplicationId="id3",
            DelaySeconds=5,
        )


def test_standard_sends_keep_delays_message_attributes_and_no_dedup_id(
    local_sqs: LocalSqs,
) -> None:
    """On a standard queue a delayed entry waits (and is counted as delayed), the others
    arrive with their message attributes and without a deduplication id."""
    sqs = local_sqs.client()
    url = local_sqs.create_queues(f"delay-{uuid.uuid4().hex[:8]}").queue_url
    tag = {"kind": {"DataType": "String", "StringValue": "transfer"}}
    sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "now", "MessageBody": "now", "MessageAttributes": tag},
                 {"Id": "later", "MessageBody": "later", "DelaySeconds": 900}],
    )  # fmt: skip
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    (message,) = receive_all(sqs, url)
    assert message["Body"] == "now"
    assert message["MessageAttributes"]["kind"]["StringValue"] == "transfer"
    assert "MessageDeduplicationId" not in message["Attributes"]


def test_a_fifo_message_received_too_often_moves_to_its_dlq(local_sqs: LocalSqs) -> None:
    """The redrive adds the message to the FIFO DLQ through the same add_message."""
    sqs = local_sqs.client()
    queues = local_sqs.create_queues(
        f"redrive-{uuid.uuid4().hex[:8]}", fifo=True, max_receive_count=1
    )
    sqs.send_message(
        QueueUrl=queues.queue_url, MessageBody="poison", MessageGroupId="g",
        MessageDeduplicationId="p",
    )  # fmt: skip
    assert len(receive_all(sqs, queues.queue_url, visibility_timeout=0)) == 1
    assert receive_all(sqs, queues.queue_url) == []  # over maxReceiveCount: moved
    (dead,) = receive_all(sqs, queues.dlq_url)
    assert dead["Body"] == "poison"
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=queues.queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert policy["maxReceiveCount"] == 1


def receive_all(sqs: Any, url: str, visibility_timeout: int = 30) -> list[dict[str, Any]]:
    """Every message visible now, with its system and message attributes."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
        VisibilityTimeout=visibility_timeout,
    ).get("Messages", []):
        messages.extend(batch)
        if visibility_timeout == 0:
            break
    return messages
