"""One log stream: structlog events and stdlib records, as JSON lines or for a console.

Everything goes through a single stdlib handler on the root logger, so records from
libraries that use :mod:`logging` (psycopg_pool's connection warnings, botocore, the
DSQL connector) come out in the same format, with the same timestamp and level
fields, as the worker's own structlog events.

Exceptions are rendered as plain tracebacks, never with local variables: a frame in
the connect path holds the IAM token in its locals, and a log line must not. For the
same reason botocore never logs below INFO (its DEBUG output signs tokens in the open).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

from worker.settings import Settings

FORMATS = ("json", "console")
QUIET_LOGGERS = ("botocore", "boto3")
"""Held at WARNING or above whatever LOG_LEVEL says: botocore's DEBUG output includes
the canonical request and signature of every presigned DSQL token, i.e. the password,
and its INFO lines ("Found credentials in environment variables") are noise."""
_HANDLER_NAME = "worker.logs"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    Binding the stream once would leave the handler writing to a closed file after a
    test harness (or a tool embedding the worker) swaps ``sys.stderr``.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.set_name(_HANDLER_NAME)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def configure_logging(settings: Settings) -> None:
    """Send structlog and stdlib logging to stderr per ``LOG_FORMAT`` and ``LOG_LEVEL``.

    Safe to call more than once: each call replaces the handler the previous one
    installed (other handlers on the root logger, such as pytest's, are left alone).
    Raises :class:`ValueError` for an unknown level name or format.
    """
    level = _level(settings.log_level)
    log_format = settings.log_format.strip().lower()
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so a later call (another LOG_LEVEL, a test) reaches loggers that
        # modules created at import time.
        cache_logger_on_first_use=False,
    )

    renderer: list[Processor]
    if log_format == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(),
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.processors.StackInfoRenderer()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _level(name: str) -> int:
    levels = logging.getLevelNamesMapping()
    level = levels.get(name.strip().upper())
    if level is None:
        known = ", ".join(n for n in levels if n not in {"NOTSET", "WARN", "FATAL"})
        raise ValueError(f"LOG_LEVEL must be one of {known}, not {name!r}")
    return level
