"""``python -m worker <command>``: the worker's command line.

Each command is a function taking the parsed arguments and returning an exit status,
registered in :func:`build_parser`. Exit status 2 means the configuration is wrong
(no database configured, an invalid setting), 1 that the command failed, 0 success.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import psycopg
from pydantic import ValidationError

from worker import shutdown
from worker.db import connect
from worker.errors import ConfigurationError, OperationFailed, describe_validation, one_line
from worker.logs import configure_logging
from worker.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_SIGTERM = 128 + 15

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per function."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="SQS -> Aurora DSQL money-transfer processor.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, handler: Command, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(handler=handler)
        return sub

    migrate = add(
        "migrate",
        migrate_command,
        "create missing tables, indexes, roles and grants (idempotent, safe to run at once "
        "from several tasks); run it as admin",
    )
    migrate.add_argument(
        "--worker-arn",
        action="append",
        default=[],
        metavar="ARN",
        help="IAM role/user ARN that may log in as DB_WORKER_ROLE (AWS IAM GRANT; repeatable)",
    )
    migrate.add_argument(
        "--reader-arn",
        action="append",
        default=[],
        metavar="ARN",
        help="IAM role/user ARN that may log in as DB_READER_ROLE (repeatable)",
    )
    migrate.add_argument(
        "--no-roles",
        action="store_true",
        help="tables and indexes only: create no roles and run no grants",
    )
    add(
        "explain",
        explain_command,
        "EXPLAIN ANALYZE the transfer statements and the history query (rolled back)",
    )
    add("run", run_command, "consume the transfer queue until SIGTERM/SIGINT, then drain")
    health = add("health", health_command, "exit 0 when a running worker's heartbeat is recent")
    health.add_argument(
        "--ready",
        action="store_true",
        help="also exit 1 while the worker holds back because the database is unreachable",
    )
    add("settings", settings_command, "print every setting as a Markdown table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    if handler is not run_command:
        # Only `run` drains on SIGTERM; the other commands stop the ordinary way.
        if shutdown.requested():
            return EXIT_SIGTERM
        shutdown.restore_defaults()
    try:
        return handler(args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OperationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.OperationalError as exc:
        # libpq's message names host and port, never the password or token.
        print(f"error: database unavailable: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


def load_settings() -> Settings:
    """Settings from the environment, with logging configured from them.

    Raises :class:`~worker.errors.ConfigurationError` with one line per refused variable.
    """
    settings = environment_settings()
    try:
        configure_logging(settings)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return settings


def environment_settings() -> Settings:
    """Settings from the environment; a refusal as one ConfigurationError line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(
            "invalid settings: " + describe_validation(exc, env_names=True, whole="settings")
        ) from None


# --- commands -----------------------------------------------------------------------


def migrate_command(args: argparse.Namespace) -> int:
    """Create whatever is missing and say what was done."""
    from worker.ops.migrate import migrate
    from worker.ops.schema import Roles

    settings = load_settings()
    roles = None if args.no_roles else Roles.from_settings(settings)
    iam = {settings.db_worker_role: args.worker_arn, settings.db_reader_role: args.reader_arn}
    with connect(settings) as conn:
        report = migrate(conn, settings.backend, schema=settings.db_schema, roles=roles, iam=iam)
    for name in report.created:
        print(f"created {name}")
    if not report.created:
        print("schema up to date: nothing created")
    for column in report.columns:
        print(f"column {column}: added")
    for role in report.roles:
        print(f"role {role}: created")
    for statement in report.granted:
        print(f"ran: {statement}")
    if report.manual:
        print("run on DSQL as admin (no IAM mapping on this backend):")
        for statement in report.manual:
            print(f"  {statement};")
    return EXIT_OK


def explain_command(_args: argparse.Namespace) -> int:
    """Print each transfer statement and the history query with its plan."""
    from worker.ops.explain import explain_transfer

    settings = load_settings()
    with connect(settings) as conn:
        plans = explain_transfer(conn)
    for plan in plans:
        print(f"-- {plan.name}")
        print(plan.statement)
        for line in plan.lines:
            print(f"    {line}")
        print()
    print("-- rolled back: nothing was changed")
    return EXIT_OK


def run_command(_args: argparse.Namespace) -> int:
    """The container's main process: the long-running SQS consumer."""
    settings = load_settings()
    if settings.worker_processes > 1:
        from worker.transport.supervisor import run_processes

        return run_processes(settings)
    from worker.transport.service import run_worker

    return run_worker(settings)


def health_command(args: argparse.Namespace) -> int:
    """Liveness (or, with --ready, readiness) for health checks; needs no database."""
    from worker.transport.health import check_health

    return check_health(environment_settings(), ready=args.ready)


def settings_command(_args: argparse.Namespace) -> int:
    """Print the settings table the README carries."""
    print(settings_markdown(), end="")
    return EXIT_OK


def settings_markdown() -> str:
    """Every :class:`Settings` field as a Markdown table row: env var, default, meaning."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| env var | default | description |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        env = f"{prefix}{name}".upper()
        default = "(unset)" if field.default is None else f"`{field.default}`"
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{env}` | {default} | {description} |")
    return "\n".join(rows) + "\n"
