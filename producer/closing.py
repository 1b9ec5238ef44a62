"""``with`` support for what the producer opens and closes, written once.

:class:`~producer.client.TransferClient` (its database connection) and
:class:`~producer.progress.ProgressBar` (its last line) are closed by a ``with`` block
however it ends; both inherit that from :class:`Closing`.
"""

from __future__ import annotations

from typing import Self


class Closing:
    """Closed at the end of a ``with`` block: ``with x:`` gives ``x`` and then calls
    :meth:`close`, whether the block ends normally or by an exception (which then
    propagates)."""

    def close(self) -> None:
        """Release what was opened; subclasses define it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
