"""``python -m worker <command>``; the commands live in :mod:`worker.ops.cli`."""

from __future__ import annotations

# Before anything heavy is imported: a SIGTERM during start-up must not kill us.
from worker import shutdown

shutdown.install()

from worker.ops.cli import main  # noqa: E402 - after the signal handlers, on purpose

if __name__ == "__main__":
    raise SystemExit(main())
