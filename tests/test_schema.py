"""The SQL schema, ``python -m worker migrate`` and ``python -m worker explain``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from worker.contract import AMOUNT_SCALE, TransferRequest
from worker.db import connect
from worker.engine import TransferEngine
from worker.ops.cli import main
from worker.ops.migrate import migrate
from worker.ops.schema import ADDED_COLUMNS, INDEXES, TABLES, statements
from worker.outcomes import Status
from worker.results import RESULT_COLUMNS
from worker.settings import Backend, Settings

REPO = Path(__file__).resolve().parent.parent
TABLE_NAMES = {"accounts", "transfer_results", "ledger_baseline", "schema_lease"}
INDEX_NAMES = {"transfer_results_payer_idx", "transfer_results_payee_idx"}
FORBIDDEN = ("SERIAL", "BIGSERIAL", "SEQUENCE", "TRIGGER", "TEMP", "TEMPORARY", "TRUNCATE",
             "REFERENCES")  # fmt: skip
EXPLAINED = ("TRANSFER", "SELECT_RESULT", "RECORD", "MOVE", "HISTORY")


def worker_command(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """``python -m worker ARGS`` in a child process, configured only by its environment."""
    env = {k: v for k, v in os.environ.items() if k not in {"DSQL_ENDPOINT", "DATABASE_URL"}}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def catalog(conn: psycopg.Connection[Any]) -> tuple[set[str], set[str]]:
    """Names of the tables and indexes in the public schema (primary keys excluded)."""
    tables = {
        r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    indexes = {
        r[0]
        for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            " AND indexname NOT LIKE '%%_pkey'"
        )
    }
    return tables, indexes


def snapshot(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Any, ...]], ...]:
    """Every row of accounts and transfer_results, in a stable order."""
    accounts = conn.execute("SELECT * FROM accounts ORDER BY id").fetchall()
    results = conn.execute("SELECT * FROM transfer_results ORDER BY transfer_id").fetchall()
    return accounts, results


def test_migrate_creates_the_tables_and_indexes_once(database_url: str) -> None:
    """migrate creates the four tables and two indexes, and a second run creates nothing."""
    settings = Settings(database_url=database_url)
    with connect(settings, autocommit=True) as conn:
        assert catalog(conn) == (set(), set())
        first = migrate(conn, Backend.POSTGRES).created
        second = migrate(conn, Backend.POSTGRES).created
        assert set(first) == TABLE_NAMES | INDEX_NAMES
        assert len(first) == len(TABLE_NAMES | INDEX_NAMES)
        assert second == []
        assert catalog(conn) == (TABLE_NAMES, INDEX_NAMES)


@pytest.mark.parametrize("backend", list(Backend))
def test_every_statement_is_one_ddl_statement_dsql_accepts(backend: Backend) -> None:
    """Each migrate statement is a single CREATE without SERIAL, sequences, triggers,
    temp tables, TRUNCATE or foreign keys (all refused or unreliable on DSQL)."""
    ddl = statements(backend)
    assert len(ddl) == len(TABLES) + len(ADDED_COLUMNS) + len(INDEXES)
    for statement in ddl:
        assert ";" not in statement.rstrip().rstrip(";"), statement
        kinds = r"(CREATE (TABLE|INDEX)|ALTER TABLE \S+ ADD COLUMN)\b"
        assert re.match(kinds, statement), statement
        assert len(re.findall(r"\b(CREATE|ALTER)\b", statement, re.IGNORECASE)) == 1, statement
        # DSQL adds only nullable columns without a default.
        assert not re.search(r"\b(NOT NULL|DEFAULT)\b", statement) or "CREATE" in statement
        for word in FORBIDDEN:
            assert not re.search(rf"\b{word}\b", statement, re.IGNORECASE), (word, statement)


def test_indexes_are_built_async_on_dsql_only() -> None:
    """DSQL index DDL is CREATE INDEX ASYNC; PostgreSQL's is a plain CREATE INDEX."""
    dsql = [s for s in statements(Backend.DSQL) if s.startswith("CREATE INDEX")]
    postgres = [s for s in statements(Backend.POSTGRES) if s.startswith("CREATE INDEX")]
    assert len(dsql) == len(postgres) == len(INDEXES)
    assert all(s.startswith("CREATE INDEX ASYNC IF NOT EXISTS ") for s in dsql)
    assert all(s.startswith("CREATE INDEX IF NOT EXISTS ") for s in postgres)
    assert not any("ASYNC" in s for s in postgres)


def test_transfer_results_has_exactly_the_columns_the_engine_writes(
    settings: Settings,
) -> None:
    """transfer_results' columns are RESULT_COLUMNS (plus the added ones), and money
    columns keep the contract's six decimal places."""
    with connect(settings) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, numeric_precision, numeric_scale"
            " FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
    by_table: dict[str, dict[str, tuple[Any, ...]]] = {}
    for table, column, *kind in columns:
        by_table.setdefault(table, {})[column] = tuple(kind)
    engine_columns = [c.strip() for c in RESULT_COLUMNS.split(",")]
    assert len(set(engine_columns)) == len(engine_columns)
    added = {c.name for c in ADDED_COLUMNS if c.table == "transfer_results"}
    assert set(by_table["transfer_results"]) == set(engine_columns) | added
    money = ("numeric", 18, AMOUNT_SCALE)
    assert by_table["transfer_results"]["amount"] == money
    assert by_table["transfer_results"]["payer_balance"] == money
    assert by_table["accounts"]["balance"] == money
    assert by_table["transfer_results"]["transfer_id"][0] == "uuid"


def test_the_engine_writes_into_the_migrated_schema(
    settings: Settings, engine: TransferEngine
) -> None:
    """A transfer applied by the engine lands in the migrated tables."""
    with connect(settings) as conn:
        conn.execute("INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 0)")
        conn.commit()
    request = TransferRequest(
        transfer_id=uuid.uuid4(), payer_id=1, payee_id=2, amount=Decimal("12.345678")
    )
    result = engine.apply(request, enqueued_at=datetime.now(UTC))
    assert result.status is Status.COMMITTED
    with connect(settings) as conn:
        accounts, results = snapshot(conn)
    assert accounts == [(1, Decimal("87.654322")), (2, Decimal("12.345678"))]
    assert [r[0] for r in results] == [request.transfer_id]


def test_migrate_command_runs_twice(database_url: str) -> None:
    """`python -m worker migrate` creates the schema, then succeeds creating nothing."""
    first = worker_command("migrate", database_url=database_url)
    assert first.returncode == 0, first.stderr
    created = [line for line in first.stdout.splitlines() if line.startswith("created ")]
    assert {line.removeprefix("created ") for line in created} == TABLE_NAMES | INDEX_NAMES

    second = worker_command("migrate", database_url=database_url)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout.replace("nothing created", "")
    assert "nothing created" in second.stdout


def test_explain_command_prints_plans_and_changes_nothing(
    settings: Settings, engine: TransferEngine
) -> None:
    """`python -m worker explain` prints every statement with an executed plan, all in a
    transaction it rolls back: balances and transfer_results are unchanged."""
    assert settings.database_url is not None
    with connect(settings) as conn:
        conn.execute("INSERT INTO accounts (id, balance) VALUES (5, 10), (7, 20), (9, 30)")
        conn.commit()
    earlier = TransferRequest(transfer_id=uuid.uuid4(), payer_id=5, payee_id=9, amount=Decimal(1))
    assert engine.apply(earlier).status is Status.COMMITTED
    with connect(settings) as conn:
        before = snapshot(conn)

    run = worker_command("explain", database_url=settings.database_url.get_secret_value())

    assert run.returncode == 0, run.stderr
    sections = re.split(r"^-- ", run.stdout, flags=re.MULTILINE)[1:]
    names = [section.split("\n", 1)[0] for section in sections]
    assert names == [*EXPLAINED, "rolled back: nothing was changed"]
    for section in sections[: len(EXPLAINED)]:
        assert "actual time=" in section, section  # ANALYZE really ran the statement
    assert "INSERT INTO transfer_results" in sections[0]  # the one-statement transfer
    assert "UPDATE accounts" in sections[0]
    assert "INSERT INTO transfer_results" in sections[2]  # RECORD
    assert "UPDATE accounts" in sections[3]  # MOVE
    with connect(settings) as conn:
        assert snapshot(conn) == before


def test_explain_needs_two_accounts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """explain on a database with fewer than two accounts exits 1 and says why."""
    assert settings.database_url is not None
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)
    monkeypatch.setenv("DATABASE_URL", settings.database_url.get_secret_value())
    with connect(settings) as conn:
        conn.execute("INSERT INTO accounts (id, balance) VALUES (1, 10)")
        conn.commit()

    assert main(["explain"]) == 1
    assert "at least two accounts" in capsys.readouterr().err
