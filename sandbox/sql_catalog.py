"""Every SQL statement the product sends, written to files for ``dsql-lint``.

Generated from the code by running it, so the catalog cannot drift from it: each
command (``worker migrate`` and ``explain``, ``producer setup``, ``balance``,
``history``, ``audit``, ``stats``, the result polling behind ``send --wait`` and
:class:`~producer.client.TransferClient`, ``watch``'s window query, and the engine in
every outcome) runs against PostgreSQL through a :class:`~sandbox.wirelog.WireLog`,
and the SQL of every ``Parse`` and ``Query`` is kept as sent, psycopg's ``$n``
placeholders included. What cannot run on PostgreSQL comes from the schema module as
DSQL gets it: ``worker.ops.schema.statements(Backend.DSQL)`` (``CREATE INDEX ASYNC``),
``access_statements`` (roles, grants, ``AWS IAM GRANT``) and the indexes' ``drop()``;
the PostgreSQL-only DDL ``migrate`` ran instead is left out.

:func:`uncaptured_literals` is the drift check the other way round: every SQL string
literal in ``worker/`` and ``producer/`` must turn up in some captured statement, or
be listed in :data:`NOT_RUN` with the reason it cannot run here (those are linted too).

``python -m sandbox.sql_catalog --output build/sql`` writes one ``.sql`` file per
source on a throwaway embedded PostgreSQL; ``tests/test_dsql_lint.py`` does the same
in the test database and lints the files.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from sandbox.dsql_statements import measure
from sandbox.postgres import EmbeddedPostgres
from sandbox.wirelog import WireLog
from worker.ops.migrate import migrate
from worker.ops.schema import INDEXES, Roles, access_statements, statements
from worker.settings import Backend, Settings

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("worker", "producer")
"""The packages whose SQL literals must all be captured."""
CATALOG_ROLES = Roles(worker="catalog_worker", reader="catalog_reader")
"""The roles the captured ``migrate`` creates on PostgreSQL (server-wide, so not the
product's names: a test server may be shared)."""
SAMPLE_IAM: dict[str, tuple[str, ...]] = {
    "transfers_worker": ("arn:aws:iam::123456789012:role/transfers-worker",)
}
"""An IAM mapping for the ``AWS IAM GRANT`` statements (the account id is made up)."""

NOT_RUN: dict[str, str] = {
    # literal (as in the code, whitespace collapsed) -> why no run here sends it
    "CALL sys.wait_for_job(%s)": "DSQL only: waits for a CREATE INDEX ASYNC job",
    "UPDATE schema_lease SET holder = %s, expires_at = %s WHERE name = %s AND expires_at < %s": (
        "only when migrate takes over a lease another run let expire"
    ),
    "DROP TABLE IF EXISTS {}.{}": "producer smoke's clean-up of its throwaway schema",
    "DROP SCHEMA IF EXISTS {}": "producer smoke's clean-up of its throwaway schema",
    "EXPLAIN ANALYZE the transfer statements and the history query (rolled back)": (
        "a help text of `python -m worker explain`, not SQL"
    ),
}
"""SQL literals of the code that no run here sends, with the reason. They are linted
all the same, converted as psycopg converts them (see :func:`not_run_source`)."""
PROSE = {"EXPLAIN ANALYZE the transfer statements and the history query (rolled back)"}


@dataclass(frozen=True)
class Source:
    """One named group of statements: what a command or the engine sent."""

    name: str
    statements: tuple[str, ...]


def flat(text: str) -> str:
    """SQL on one line, runs of whitespace as one space."""
    return " ".join(text.split())


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """The product's CLIs read their settings from the environment: set it, briefly."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet(run: Callable[[], int]) -> int:
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        return run()


def capture(settings: Settings) -> list[Source]:
    """Run every command through a wire log on the migrated database of ``settings``
    (its accounts and results are replaced); the statements each one sent."""
    from producer.cli import main as producer_main
    from producer.results import fetch_results, wait_for_results
    from producer.watch import WINDOW_SQL
    from worker.db import connect
    from worker.ops.cli import main as worker_main

    assert settings.database_url is not None
    info = conninfo_to_dict(settings.database_url.get_secret_value())
    target = (str(info.get("host") or "127.0.0.1"), int(str(info["port"])))
    sources: list[Source] = []
    with WireLog(target) as log:
        url = make_conninfo(**{**info, "host": "127.0.0.1", "port": str(log.port)})  # type: ignore[arg-type]
        proxied = settings.model_copy(update={"database_url": SecretStr(url)})

        def run(name: str, action: Callable[[], object]) -> None:
            log.reset()
            with _environment(DATABASE_URL=url):
                outcome = action()
            if isinstance(outcome, int) and not isinstance(outcome, bool) and outcome != 0:
                raise RuntimeError(f"{name} exited {outcome}")
            sent = [flat(m.sql) for m in log.messages() if m.from_client and m.sql]
            sources.append(Source(name, tuple(dict.fromkeys(sent))))

        def migrate_postgres() -> None:
            with connect(proxied) as conn:
                migrate(conn, Backend.POSTGRES, roles=CATALOG_ROLES)

        run("worker_migrate", migrate_postgres)
        # Before setup, so that setup finds results and accounts to delete.
        sources.append(_engine(settings))
        for command in (
            ["setup", "--accounts", "20", "--balance", "100"],
            ["balance", "1"],
            ["history", "1"],
            ["audit"],
            ["stats"],
        ):
            run("producer_" + command[0], partial(_quiet, partial(producer_main, command)))
        run("worker_explain", partial(_quiet, partial(worker_main, ["explain"])))

        ids = [uuid.uuid4() for _ in range(3)]

        def poll_results() -> None:
            with connect(proxied, autocommit=True) as conn:
                fetch_results(conn, ids)
                wait_for_results(conn, ids[:1], timeout_s=0)

        run("producer_results", poll_results)

        def watch_window() -> None:
            with connect(proxied, autocommit=True) as conn:
                conn.execute(WINDOW_SQL, {"window_s": 10}).fetchall()

        run("producer_watch", watch_window)
    return [s for s in _without_postgres_ddl(sources) if s.statements] + _dsql_ddl()


def _engine(settings: Settings) -> Source:
    """The engine's statements in every outcome, both variants, from the measurement
    behind docs/dsql-statements.md (on DSQL's connection settings)."""
    measurement = measure(settings)
    sent = [
        flat(m.sql)
        for transcript in (*measurement.dsql, *measurement.pipelined)
        for m in transcript.messages
        if m.from_client and m.sql
    ]
    return Source("engine", tuple(dict.fromkeys(sent)))


def _without_postgres_ddl(sources: list[Source]) -> list[Source]:
    postgres_only = {flat(s) for s in statements(Backend.POSTGRES)} - {
        flat(s) for s in statements(Backend.DSQL)
    }
    return [
        Source(s.name, tuple(t for t in s.statements if t not in postgres_only)) for s in sources
    ]


def _dsql_ddl() -> list[Source]:
    return [
        Source("schema_dsql", tuple(flat(s) for s in statements(Backend.DSQL))),
        Source(
            "schema_access",
            tuple(flat(s) for s in access_statements(Roles(), schema="transfers", iam=SAMPLE_IAM)),
        ),
        Source("schema_index_rebuild", tuple(i.drop().as_string(None) for i in INDEXES)),
        not_run_source(),
    ]


def not_run_source() -> Source:
    """The :data:`NOT_RUN` statements with psycopg's placeholders ($1, $2, ...) and a
    sample name for each identifier composed in with ``psycopg.sql``."""
    texts = []
    for literal in NOT_RUN:
        if literal in PROSE:
            continue
        names: dict[str, int] = {}

        def number(match: re.Match[str], names: dict[str, int] = names) -> str:
            key = match.group(1) or f"#{len(names)}"
            return f"${names.setdefault(key, len(names) + 1)}"

        named = _FORMAT_FIELD.sub("smoke_sample", literal)  # identifiers composed in
        texts.append(re.sub(r"%\((\w+)\)s|%s", number, named))
    return Source("not_run", tuple(texts))


def write(sources: Sequence[Source], directory: Path) -> dict[Path, list[str]]:
    """One ``<name>.sql`` per source (old files removed); returns, per file, the
    statement on each line (index = line number - 1, "" between statements)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.sql"):
        old.unlink()
    lines: dict[Path, list[str]] = {}
    for source in sources:
        path = directory / f"{source.name}.sql"
        text: list[str] = []
        by_line: list[str] = []
        for statement in source.statements:
            text.append(statement + ";")
            by_line.append(statement)
        path.write_text("\n".join(text) + "\n")
        lines[path] = by_line
    return lines


# --- the other direction: is every SQL literal of the code in the catalog? ------------

_SQL_START = re.compile(
    r"\s*\(?\s*(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE|ALTER|DROP|GRANT|"
    r"REVOKE|CALL|EXPLAIN|BEGIN|COMMIT|ROLLBACK|WITH \w+ AS|AWS IAM|TRUNCATE|DEALLOCATE|"
    r"PREPARE|VACUUM|LOCK)\b"
)
_PLACEHOLDER = re.compile(r"%\(\w+\)s|%s|\$\d+")
_FORMAT_FIELD = re.compile(r"\{\w*\}")


def sql_literals(root: Path = ROOT) -> Iterator[tuple[str, int, str]]:
    """(file, line, text) of every string literal in :data:`SOURCES` that starts like a
    SQL statement (docstrings and help texts do not: they start with prose)."""
    for package in SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and _SQL_START.match(node.value)
                    and len(node.value.split()) > 1  # "SELECT", "UPDATE": privileges
                ):
                    yield str(path.relative_to(root)), node.lineno, node.value


def _fragments(literal: str) -> list[str]:
    text = _PLACEHOLDER.sub("?", flat(literal))
    return [f.strip() for f in _FORMAT_FIELD.split(text) if len(f.strip()) >= 8]


def uncaptured_literals(sources: Sequence[Source], root: Path = ROOT) -> list[str]:
    """``file:line: literal`` for each SQL literal none of whose long fragments appears
    in a captured statement, unless :data:`NOT_RUN` explains it."""
    corpus = "\n".join(_PLACEHOLDER.sub("?", s) for source in sources for s in source.statements)
    missing = []
    for path, line, literal in sql_literals(root):
        if flat(literal) in NOT_RUN:
            continue
        if not all(fragment in corpus for fragment in _fragments(literal)):
            missing.append(f"{path}:{line}: {flat(literal)[:100]}")
    return missing


# --- findings explained next to their statement ----------------------------------------

_EXPLANATION = re.compile(r"#\s*dsql-lint:\s*(?P<rule>[\w-]+)\s*[:-]\s*(?P<why>.+)")


def explanation(rule: str, statement: str, root: Path = ROOT) -> str | None:
    """Where the code explains a ``rule`` finding on ``statement``: a comment
    ``# dsql-lint: <rule>: <why>`` at most 3 lines above a SQL literal of
    :data:`SOURCES` whose long fragments all occur in ``statement``. ``file:line: why``,
    or None."""
    normalized = _PLACEHOLDER.sub("?", flat(statement))
    literals = list(sql_literals(root))
    for package in SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            name = str(path.relative_to(root))
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = _EXPLANATION.search(line)
                if not match or match.group("rule") != rule:
                    continue
                for file, at, literal in literals:
                    fragments = _fragments(literal)
                    if (
                        file == name
                        and number < at <= number + 3
                        and fragments
                        and all(f in normalized for f in fragments)
                    ):
                        return f"{name}:{number}: {match.group('why').strip()}"
    return None


# --- command line ------------------------------------------------------------------------


def capture_on_embedded_postgres() -> list[Source]:
    """:func:`capture` on a throwaway embedded PostgreSQL."""
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("catalog")))
        info = conninfo_to_dict(pg.url)
        url = make_conninfo(**{**info, "dbname": "catalog"})  # type: ignore[arg-type]
        return capture(Settings(database_url=SecretStr(url), pool_min_size=1))


def main(argv: Sequence[str] | None = None) -> int:
    """Write the catalog; report SQL literals it misses (exit 1 if any)."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.sql_catalog")
    parser.add_argument("--output", type=Path, default=Path("build/sql"))
    args = parser.parse_args(argv)
    sources = capture_on_embedded_postgres()
    written = write(sources, args.output)
    print(f"{sum(map(len, written.values()))} statements in {len(written)} files in {args.output}")
    missing = uncaptured_literals(sources)
    for line in missing:
        print(f"not captured: {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
