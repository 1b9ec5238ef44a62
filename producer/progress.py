"""A small text progress bar for long command-line jobs (``producer setup``, ``load``).

Written for callbacks that arrive from worker threads: :meth:`ProgressBar.advance` is
thread-safe and draws under the same lock, so lines never interleave. On a terminal
the bar redraws in place with ``\\r`` (at most every ``redraw_s``); when stderr is a
file or a pipe (CI logs, ``2> setup.log``) it prints a full line each time another
10 % is done instead, so logs stay short and readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from producer.closing import Closing

WIDTH = 30
"""Characters of the ``[####....]`` bar drawn on a terminal."""
STEPS = 10
"""Lines printed when not on a terminal: one per 1/STEPS of the total."""


class ProgressBar(Closing):
    """``label  count/total  percent  rate/s`` for ``total`` units of work."""

    def __init__(
        self,
        total: int,
        *,
        label: str = "",
        unit: str = "rows",
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        redraw_s: float = 0.1,
    ) -> None:
        self.total = max(total, 0)
        self.count = 0
        self._label = label
        self._unit = unit
        # Resolved now rather than at import so pytest's capture (and redirections
        # made after import) are honoured.
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._clock = clock
        self._redraw_s = redraw_s
        self._started = clock()
        self._drawn_at: float | None = None
        self._drawn_count = 0
        self._steps_printed = 0
        self._lock = threading.Lock()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done and redraw if it is time to."""
        with self._lock:
            self.count += n
            now = self._clock()
            if self._tty:
                if self._drawn_at is None or now - self._drawn_at >= self._redraw_s:
                    self._draw(now)
            else:
                step = self._step()
                if step > self._steps_printed:
                    self._steps_printed = step
                    self._draw(now)

    def close(self) -> None:
        """Draw the final state (if anything was drawn or done) and end the line."""
        with self._lock:
            if self._tty:
                if self.count or self._drawn_at is not None:
                    self._draw(self._clock())
                    self._stream.write("\n")
                    self._stream.flush()
            elif self.count != self._drawn_count:
                # The job ended between two 10 % steps (or the total was an estimate):
                # the log's last line should still tell where it ended.
                self._draw(self._clock())

    def render(self, now: float | None = None) -> str:
        """The current status line, without ``\\r`` or newline."""
        elapsed = (self._clock() if now is None else now) - self._started
        pct = 100.0 * self.count / self.total if self.total else 100.0
        rate = f"{self.count / elapsed:,.0f} {self._unit}/s" if elapsed > 0 else "-"
        text = f"{self.count:,}/{self.total:,} {self._unit}  {pct:5.1f} %  {rate}"
        if self._tty:
            filled = min(int(WIDTH * pct / 100), WIDTH)
            text = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {text}"
        return f"{self._label}  {text}" if self._label else text

    def _step(self) -> int:
        if not self.total:
            return STEPS
        return min(self.count * STEPS // self.total, STEPS)

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._drawn_count = self.count
        line = self.render(now)
        # \x1b[K clears what a longer previous line left on the terminal.
        self._stream.write(f"\r{line}\x1b[K" if self._tty else f"{line}\n")
        self._stream.flush()
