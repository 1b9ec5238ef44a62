"""``python -m producer``: see :mod:`producer.cli`."""

from __future__ import annotations

from producer.cli import main

raise SystemExit(main())
