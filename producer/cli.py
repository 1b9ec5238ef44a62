"""``python -m producer``: the parser of every command, and :func:`main` that runs one.

Each module of :mod:`producer.commands` adds its command with ``register(subparsers)``
and sets ``handler`` to a function ``(args, settings) -> exit code``; :data:`COMMANDS`
lists them in ``--help`` order. :func:`main` does the rest: parsing,
:class:`~worker.settings.Settings` from the environment, and turning configuration
and connection problems into one line on stderr with exit code 2 (the exit codes and
the output conventions are :mod:`producer.console`'s).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import psycopg
import pydantic
from psycopg import errors as pg_errors

from producer.commands import account, audit, dlq, load, report, send, setup, smoke, stats, watch
from producer.console import EXIT_CANNOT_RUN, Handler, Subparsers, fail
from worker.errors import NotConfigured, describe_validation
from worker.settings import Settings

COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    setup.register,
    account.register_balance,
    account.register_history,
    audit.register,
    stats.register,
    send.register,
    load.register,
    dlq.register,
    watch.register,
    report.register,
    smoke.register,
)
"""Every command, in ``--help`` order."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (never raises SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CANNOT_RUN
    handler: Handler = args.handler
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        # Without input values: the environment may hold secrets.
        return fail(
            f"invalid settings in the environment: {describe_validation(exc, whole='settings')}"
        )
    try:
        return handler(args, settings)
    except NotConfigured as exc:
        return fail(f"no database configured: {exc}")
    except pg_errors.UndefinedTable as exc:
        return fail(f"{exc.diag.message_primary}: run `python -m worker migrate` first")
    except psycopg.OperationalError as exc:
        # Connection faults have no SQLSTATE or class 08; the rest (a conflict, a
        # timeout) came from a server that answered.
        unreachable = exc.sqlstate is None or exc.sqlstate.startswith("08")
        return fail(f"database {'unavailable' if unreachable else 'error'}: {exc}")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m producer",
        description="Send transfers, set up, inspect and audit the transfer ledger.",
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    for register in COMMANDS:
        register(subparsers)
    return parser
