"""The health file: liveness for the container HEALTHCHECK, readiness for alarms.

The running worker rewrites the file every second while its pollers are alive (or
deliberately holding back). Its age says whether the process is alive; its content
says whether it is *ready*, i.e. taking work. ``python -m worker health`` checks only
the age: a worker waiting out a database outage is alive, and killing it would only
restart it into the same outage. ``health --ready`` also needs ``"ready": true``.
Neither needs the database or the network.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from worker.settings import Settings


def write_health(path: Path, *, ready: bool) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps({"ready": ready, "pid": os.getpid()}))
    scratch.replace(path)


def check_health(settings: Settings, *, ready: bool = False) -> int:
    """0 when the heartbeat is recent (and, with ``ready``, the worker takes work)."""
    path = Path(settings.health_file)
    try:
        age = time.time() - path.stat().st_mtime
        content = path.read_text()
    except FileNotFoundError:
        print(f"unhealthy: {path} does not exist (worker not running?)")
        return 1
    if age > settings.health_max_age_s:
        print(f"unhealthy: last heartbeat {age:.0f}s ago (limit {settings.health_max_age_s:.0f}s)")
        return 1
    try:
        is_ready = bool(json.loads(content).get("ready", True)) if content else True
    except (ValueError, AttributeError):
        is_ready = True  # an older worker's empty marker: alive, nothing more known
    if ready and not is_ready:
        print(f"not ready: holding back, the database is unreachable ({age:.1f}s ago)")
        return 1
    state = "ready" if is_ready else "alive, holding back (database unreachable)"
    print(f"healthy: {state}; last heartbeat {age:.1f}s ago")
    return 0
