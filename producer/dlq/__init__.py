"""The dead-letter queue (``DLQ_URL``): look into it, move it back to the transfer queue.

:func:`peek` receives up to N messages and makes them visible again at once, so
looking does not hide them. :func:`redrive` moves messages back to the transfer queue:
everything with an SQS message move task (:func:`move_by_task`), or, where the
endpoint has none or for at most N messages, by copy (:func:`move_by_copy`): receive,
send to the queue, and delete from the DLQ only what the queue accepted.
:mod:`.messages` is what both share: how they receive and release, the worker's
diagnostics on a dead letter, and a message's copy without them. The command is
:mod:`producer.commands.dlq`.
"""

from producer.dlq.by_copy import move_by_copy
from producer.dlq.by_task import MoveTaskUnsupported, move_by_task, unsupported_answer
from producer.dlq.messages import HOLD_S, DeadLetter
from producer.dlq.peek import Peek, peek
from producer.dlq.redrive import redrive
from producer.dlq.report import Method, RedriveReport

__all__ = [
    "HOLD_S",
    "DeadLetter",
    "Method",
    "MoveTaskUnsupported",
    "Peek",
    "RedriveReport",
    "move_by_copy",
    "move_by_task",
    "peek",
    "redrive",
    "unsupported_answer",
]
