"""``with`` support for the sandbox's local services, written once."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """A local stand-in that ``with`` starts and closes. Subclasses define both."""

    def start(self) -> Self:
        """Start serving; returns self."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop serving and release what :meth:`start` acquired."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
