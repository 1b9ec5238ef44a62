"""Every statement the product sends passes AWS's dsql-lint, or its finding is
explained next to the statement in the code (sandbox.sql_catalog)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from sandbox.sql_catalog import Source, capture, explanation, uncaptured_literals, write
from worker.settings import Settings

DSQL_LINT = shutil.which("dsql-lint", path=str(Path(sys.executable).parent)) or "dsql-lint"


@dataclass(frozen=True)
class Finding:
    """One dsql-lint diagnostic, with the whole statement it is about."""

    file: str
    rule: str
    message: str
    statement: str


@dataclass(frozen=True)
class Catalog:
    sources: list[Source]
    lines: dict[Path, list[str]]


@pytest.fixture(scope="module")
def catalog(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """The product's statements, captured in a database of their own, written as files."""
    name = f"t_lint_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = conninfo_to_dict(server_url)
    url = make_conninfo(**{**info, "dbname": name})  # type: ignore[arg-type]
    sources = capture(Settings(database_url=SecretStr(url), pool_min_size=1))
    yield Catalog(sources, write(sources, tmp_path_factory.mktemp("sql")))
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def lint(lines: dict[Path, list[str]]) -> list[Finding]:
    """dsql-lint over the files; each diagnostic with the statement on its line."""
    done = subprocess.run(
        [DSQL_LINT, "--format", "json", *map(str, lines)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    findings = []
    for entry in report["files"]:
        assert entry["error"] is None, entry
        statements = lines[Path(entry["file"])]
        for diagnostic in entry["diagnostics"]:
            findings.append(
                Finding(
                    Path(entry["file"]).name,
                    diagnostic["rule"],
                    diagnostic["message"],
                    statements[diagnostic["line"] - 1],
                )
            )
    return findings


def test_every_statement_passes_dsql_lint_or_is_explained(catalog: Catalog) -> None:
    """No dsql-lint finding without a `# dsql-lint: <rule>: <why>` next to its statement."""
    unexplained = [f for f in lint(catalog.lines) if explanation(f.rule, f.statement) is None]
    assert unexplained == []


def test_every_sql_literal_of_the_code_is_in_the_catalog(catalog: Catalog) -> None:
    """A SQL string in worker/ or producer/ that no captured command sent (and no
    NOT_RUN entry explains) means the catalog misses a code path."""
    assert uncaptured_literals(catalog.sources) == []


def test_catalog_holds_every_command(catalog: Catalog) -> None:
    """Each command contributed statements, and setup's batch deletes are among them."""
    by_name = {s.name: s.statements for s in catalog.sources}
    assert {
        "worker_migrate", "engine", "producer_setup", "producer_balance", "producer_history",
        "producer_audit", "producer_stats", "worker_explain", "producer_results",
        "producer_watch", "schema_dsql", "schema_access", "schema_index_rebuild", "not_run",
    } <= set(by_name)  # fmt: skip
    assert all(by_name.values())
    assert any(s.startswith('DELETE FROM "accounts"') for s in by_name["producer_setup"])
    assert "START TRANSACTION ISOLATION LEVEL REPEATABLE READ" in by_name["engine"]
    assert any(s.startswith("CREATE INDEX ASYNC") for s in by_name["schema_dsql"])
    assert not any("ASYNC" not in s for s in by_name["schema_dsql"] if "INDEX" in s)


def test_lint_fails_on_what_dsql_refuses(tmp_path: Path) -> None:
    """The check can fail: statements DSQL refuses are findings nobody explained."""
    bad = [
        "TRUNCATE accounts",
        'CREATE INDEX IF NOT EXISTS "x" ON "accounts" ("balance")',
        "DEALLOCATE _pg3_0",
    ]
    findings = lint(write([Source("bad", tuple(bad))], tmp_path))
    assert {f.rule for f in findings} == {"truncate", "index_async", "unsupported_deallocate"}
    assert [f.statement for f in findings] == bad
    assert all(explanation(f.rule, f.statement) is None for f in findings)


def test_an_explanation_is_a_comment_right_above_the_statement(tmp_path: Path) -> None:
    """`# dsql-lint: <rule>: <why>` explains findings of that rule on the literal below."""
    (tmp_path / "worker").mkdir()
    (tmp_path / "producer").mkdir()
    (tmp_path / "worker" / "wipe.py").write_text(
        "# dsql-lint: truncate: test data only, never on DSQL\n"
        'WIPE = "TRUNCATE accounts_for_tests"\n'
        'OTHER = "TRUNCATE other_table_here"\n'
    )
    found = explanation("truncate", "TRUNCATE accounts_for_tests", root=tmp_path)
    assert found == "worker/wipe.py:1: test data only, never on DSQL"
    assert explanation("index_async", "TRUNCATE accounts_for_tests", root=tmp_path) is None
    assert explanation("truncate", "TRUNCATE somewhere_else", root=tmp_path) is None
