"""Dispatch: from a message to a verdict, the same for every transport.

:mod:`.message` (what arrived), :mod:`.scheduler` (no two transfers on one account at
once), :mod:`.fifo` (the FIFO rule), :mod:`.batching` (which transfers may share a
statement), :mod:`.dispatcher` (parse, apply, decide) and :mod:`.metrics` (what
happened, as CloudWatch EMF)."""

from worker.dispatch.batching import Batching
from worker.dispatch.dispatcher import Action, Dispatcher, Job, Verdict
from worker.dispatch.message import Message
from worker.dispatch.metrics import Metrics

__all__ = ["Action", "Batching", "Dispatcher", "Job", "Message", "Metrics", "Verdict"]
