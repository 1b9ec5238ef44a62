"""Dispatch: from a message to a verdict, the same for every transport.

:mod:`.message` (what arrived), :mod:`.scheduler` (no two transfers on one account at
once), :mod:`.fifo` (the FIFO rule), :mod:`.dispatcher` (parse, apply, decide) and
:mod:`.metrics` (what happened, as CloudWatch EMF)."""

from worker.dispatch.dispatcher import Action, Dispatcher, Job, Verdict
from worker.dispatch.message import Message
from worker.dispatch.metrics import Metrics

__all__ = ["Action", "Dispatcher", "Job", "Message", "Metrics", "Verdict"]
