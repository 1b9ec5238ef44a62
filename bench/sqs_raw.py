"""``python -m bench.sqs_raw``: moto's own throughput for the worker's SQS pattern, with
no work in between.

A consumer process with the worker's client settings and its number of pollers
(``ceil(2 x concurrency / 10)``): each poller receives up to 10 messages (with the
same system attributes the worker asks for) and deletes them in one
DeleteMessageBatch call, until ``--expect`` messages are deleted. The producer side is
``python -m producer load`` without ``--wait``, exactly as in the end-to-end run, so
the two runs differ only in what happens between receive and delete. Prints one JSON
object: ``deleted``, ``receives``, ``empty_receives``, ``last_delete_at`` (epoch s).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.settings import Settings
from worker.transport.sqs import BATCH, queue_url, sqs_client

ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount", "MessageGroupId"]


def consume(
    client: Any, url: str, *, expect: int, pollers: int, wait_s: int, idle_timeout_s: float
) -> dict[str, float | int | None]:
    """Receive and delete until ``expect`` messages are deleted (or nothing arrives
    for ``idle_timeout_s`` once something did)."""
    lock = threading.Lock()
    counts = {"deleted": 0, "receives": 0, "empty_receives": 0}
    last: dict[str, float | None] = {"delete_at": None, "message_at": None}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            response = client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=BATCH,
                WaitTimeSeconds=wait_s,
                MessageSystemAttributeNames=ATTRIBUTES,
            )
            messages = response.get("Messages", [])
            with lock:
                counts["receives"] += 1
                counts["empty_receives"] += not messages
            if not messages:
                seen = last["message_at"]
                if seen is not None and time.time() - seen > idle_timeout_s:
                    done.set()
                continue
            deleted = client.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            now = time.time()
            with lock:
                counts["deleted"] += len(deleted.get("Successful", []))
                last["delete_at"] = last["message_at"] = now
                if counts["deleted"] >= expect:
                    done.set()

    started_cpu = time.process_time()
    threads = [threading.Thread(target=poll, name=f"poller-{i}") for i in range(pollers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        **counts,
        "last_delete_at": last["delete_at"],
        "consume_cpu_s": time.process_time() - started_cpu,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, consume, print the JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m bench.sqs_raw", description=__doc__)
    parser.add_argument("--expect", type=int, required=True, help="messages to delete")
    parser.add_argument("--pollers", type=int, default=2, help="receiving threads")
    parser.add_argument("--wait-s", type=int, default=1, help="long-poll wait (RECEIVE_WAIT_S)")
    parser.add_argument("--idle-timeout-s", type=float, default=15.0)
    parser.add_argument("--ready-file", type=Path, help="touched once the client is built")
    args = parser.parse_args(argv)
    settings = Settings()
    client = sqs_client(settings, max_pool_connections=settings.concurrency + 10)
    url = queue_url(settings, client)
    if args.ready_file is not None:
        args.ready_file.touch()
    summary = consume(
        client,
        url,
        expect=args.expect,
        pollers=args.pollers,
        wait_s=args.wait_s,
        idle_timeout_s=args.idle_timeout_s,
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
