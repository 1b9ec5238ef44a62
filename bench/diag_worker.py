"""``python -m bench.diag_worker --ack-threads N``: a diagnostic, bench-only.

``python -m worker run`` with N threads sending its delete batches instead of one.
The product's :class:`worker.transport.sqs.Acknowledger` has a single sender thread: each
DeleteMessageBatch waits for the previous one, so a worker can acknowledge at most 10
messages per SQS round trip, however fast it applies them. The end-to-end profile
shows that thread busy 100 % of the time in ``delete_message_batch`` while the
executors idle. Running the same worker with more sender threads (nothing else
changed) measures how much of the pipeline's gap that one thread explains.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from typing import Any

from worker import sqs as worker_sqs
from worker.ops.cli import main as worker_main


def patch_acknowledger(threads: int) -> None:
    """Give every :class:`~worker.transport.sqs.Acknowledger` ``threads`` sender threads; each
    takes operations from the same queue and batches them exactly as the first does."""
    original_init = worker_sqs.Acknowledger.__init__
    original_close = worker_sqs.Acknowledger.close
    extra_threads: dict[int, list[threading.Thread]] = {}

    def init(self: Any, client: Any, url: str, linger_s: float = 0.02) -> None:
        original_init(self, client, url, linger_s)
        extra = [
            threading.Thread(target=self._loop, name=f"sqs-ack-{i}", daemon=True)
            for i in range(1, threads)
        ]
        for thread in extra:
            thread.start()
        extra_threads[id(self)] = extra

    def close(self: Any, timeout: float = 10.0) -> None:
        extra = extra_threads.pop(id(self), [])
        for _ in extra:
            self._ops.put(None)  # one stop marker per extra sender
        original_close(self, timeout)
        for thread in extra:
            thread.join(timeout)

    worker_sqs.Acknowledger.__init__ = init  # type: ignore[method-assign]
    worker_sqs.Acknowledger.close = close  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    """Patch, then run ``python -m worker run``."""
    parser = argparse.ArgumentParser(prog="python -m bench.diag_worker", description=__doc__)
    parser.add_argument("--ack-threads", type=int, default=4)
    args = parser.parse_args(argv)
    patch_acknowledger(args.ack_threads)
    return worker_main(["run"])


if __name__ == "__main__":
    sys.exit(main())
