"""``python -m worker <command>``; the commands live in :mod:`worker.cli`."""

from __future__ import annotations

from worker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
