"""SIGTERM/SIGINT, caught from the first moment of the process.

ECS (and the fault suite) may stop a worker while it is still importing its
dependencies. With Python's default handlers that SIGTERM kills the process outright
(exit -15) and SIGINT raises KeyboardInterrupt wherever the main thread happens to be.
``python -m worker`` calls :func:`install` before importing anything heavy; the
signal is remembered, and whoever starts work later (:func:`on_request`) is told at
once if it already came. Deliberately free of third-party imports.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

_requested = threading.Event()
_signal_name: list[str] = []
_callbacks: list[Callable[[str], None]] = []
_lock = threading.Lock()


def install() -> None:
    """Route SIGTERM and SIGINT to :func:`request`. Main thread only."""
    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def restore_defaults() -> None:
    """Python's own handlers again, for commands that have nothing to drain."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def request(name: str) -> None:
    """Ask for a graceful shutdown (what the signal handler does)."""
    with _lock:
        if not _signal_name:
            _signal_name.append(name)
        _requested.set()
        callbacks = list(_callbacks)
    for callback in callbacks:
        callback(name)


def on_request(callback: Callable[[str], None]) -> None:
    """Call ``callback(signal_name)`` on shutdown; at once if it was already requested."""
    with _lock:
        _callbacks.append(callback)
        already = _signal_name[0] if _requested.is_set() else None
    if already is not None:
        callback(already)


def requested() -> bool:
    """True once a shutdown was asked for."""
    return _requested.is_set()


def _handle(signum: int, _frame: FrameType | None) -> None:
    request(signal.Signals(signum).name)
