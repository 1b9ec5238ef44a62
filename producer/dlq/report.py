"""What a redrive did, by move task or by copy: :class:`RedriveReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Method(StrEnum):
    """How ``redrive`` moved the messages."""

    MOVE_TASK = "move_task"
    COPY = "copy"


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
