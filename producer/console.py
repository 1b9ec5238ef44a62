"""What every ``python -m producer`` command shares: exit codes, how an error or a
figure is printed, and the types of the arguments.

Exit codes: :data:`EXIT_OK` success; :data:`EXIT_NO` the answer is "no" (unknown
account, audit violations, a rejected transfer, transfers without a result);
:data:`EXIT_CANNOT_RUN` the command could not run (bad arguments, no database or queue
configured or reachable, schema missing); :data:`EXIT_TIMEOUT` ``send --wait`` saw no
result in time.

Results go to stdout, progress and errors to stderr, so ``--json`` output can be
piped as is. This module imports nothing of the producer: the commands, the STATS
block and the report all print through it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeAlias

from worker.settings import Settings

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace, Settings], int]
"""What a command runs: ``(args, settings) -> exit code``."""

EXIT_OK = 0
EXIT_NO = 1
EXIT_CANNOT_RUN = 2
EXIT_TIMEOUT = 3


def fail(message: str, code: int = EXIT_CANNOT_RUN) -> int:
    """Print ``error: message`` on stderr; returns ``code`` for the command to exit with."""
    print(f"error: {message}", file=sys.stderr)
    return code


def line(label: str, value: str) -> str:
    """One figure of a block (``BASELINE``, ``STATS``, ...): ``  label  value``."""
    return f"  {label:<15} {value}"


def add_json(cmd: argparse.ArgumentParser) -> None:
    """``--json``: one JSON object on stdout instead of the text block."""
    cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")


def add_timeout(cmd: argparse.ArgumentParser, default_s: float, waited_for: str) -> None:
    """``--timeout S``: the longest wait for ``waited_for`` (``--wait``)."""
    cmd.add_argument(
        "--timeout",
        type=seconds,
        default=default_s,
        metavar="S",
        help=f"longest wait for {waited_for} (default: {default_s:g} s)",
    )


# --- argument types -----------------------------------------------------------------


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded_int(most: int, what: str) -> Callable[[str], int]:
    """argparse type: a :func:`positive_int` of at most ``most``, refused as ``at most
    {most} {what}`` above it."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"at most {most} {what}, got {value}")
        return value

    return parse


def decimal(text: str) -> Decimal:
    """argparse type: a finite decimal number, written out plainly (``1e3`` is 1000)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    # "1e3" becomes 1000, so the baseline prints as a plain amount.
    return Decimal(format(value, "f"))


def seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def moment(text: str) -> datetime:
    """argparse type: an aware datetime from ISO 8601 (UTC if no offset is given) or
    from a time ago such as ``90s``, ``15m``, ``2h``, ``1d``."""
    text = text.strip()
    unit = text[-1:].lower()
    if unit in _AGO and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * _AGO[unit])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 such as 2026-12-01T10:00:00Z, or 15m, 2h, 1d ago)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def add_window_arguments(cmd: argparse.ArgumentParser) -> None:
    """``--since T`` and ``--until T``: a window of completion times."""
    cmd.add_argument(
        "--since",
        type=moment,
        default=None,
        metavar="T",
        help="only results completed at or after T: ISO 8601 (2026-12-01T10:00:00Z; "
        "UTC when no offset is given) or a time ago (90s, 15m, 2h, 1d)",
    )
    cmd.add_argument(
        "--until", type=moment, default=None, metavar="T", help="only results completed before T"
    )


def window_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--since`` / ``--until`` (see :func:`add_window_arguments`),
    or None."""
    if args.since and args.until and args.since >= args.until:
        return "--since must be before --until"
    return None
