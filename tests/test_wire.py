"""What the engine sends on the wire, per outcome (sandbox.dsql_statements): pinned by
docs/dsql-statements.md, which is generated from the same measurement."""

from __future__ import annotations

import difflib
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from sandbox import dsql_statements
from sandbox.dsql_statements import CASES, DOCUMENT, Measurement, flat, measure, render
from sandbox.wirelog import Message, WireLog
from worker.db import connect
from worker.ops.migrate import migrate
from worker.outcomes import Reason
from worker.settings import Backend, Settings

REGENERATE = f"python -m sandbox.dsql_statements --write {DOCUMENT}"


@pytest.fixture(scope="module")
def measurement(server_url: str) -> Iterator[Measurement]:
    """One measurement for the module, in a database of its own."""
    name = f"t_wire_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = conninfo_to_dict(server_url)
    url = make_conninfo(**{**info, "dbname": name})  # type: ignore[arg-type]
    settings = Settings(database_url=SecretStr(url), pool_min_size=1)
    with connect(settings) as conn:
        migrate(conn, Backend.POSTGRES)
    yield measure(settings)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_document_is_what_the_engine_sends(measurement: Measurement) -> None:
    """docs/dsql-statements.md shows exactly the measured messages of every outcome."""
    current = Path(DOCUMENT).read_text()
    expected = render(measurement, current)
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            "docs (committed)",
            "measured now",
            n=1,
        )
    )
    assert not diff, f"the engine's wire traffic changed; run `{REGENERATE}`:\n{diff[:6000]}"


def test_every_outcome_is_measured() -> None:
    """The cases cover committed, duplicate, every rejection reason and a retry."""
    names = {case.name for case in CASES}
    assert {r.value for r in Reason} <= names
    assert {"committed", "duplicate", "retried_conflict"} <= names


def test_dsql_configuration_sends_no_prepared_statements(measurement: Measurement) -> None:
    """On DSQL's settings every statement is an unnamed Parse: no named statement, no
    PREPARE, DEALLOCATE or SAVEPOINT, in any outcome (the rejections' ROLLBACK included)."""
    for transcript in measurement.dsql:
        sent = [m for m in transcript.messages if m.from_client]
        assert sent, transcript.case.name
        assert [m for m in sent if m.kind in ("Parse", "Bind", "Close") and m.name] == []
        statements = [flat(m.sql).upper() for m in sent if m.sql is not None]
        assert not [s for s in statements if s.startswith(("PREPARE", "DEALLOCATE", "SAVEPOINT"))]


def test_psycopg_default_prepares_and_keeps_its_statement_through_rejections(
    measurement: Measurement,
) -> None:
    """On PostgreSQL's settings psycopg names the transfer statement after 5 runs, and
    since a rejection no longer sends a ROLLBACK through the connection, the next
    transfer still binds the prepared statement: no DEALLOCATE ALL is ever queued."""
    committed, rejected, after = measurement.default
    assert any(m.kind == "Parse" and m.name for m in committed.messages)
    assert any(m.kind == "Bind" and m.name for m in rejected.messages)
    assert any(m.kind == "Bind" and m.name for m in after.messages)
    statements = [flat(m.sql).upper() for t in measurement.default for m in t.messages if m.sql]
    assert not [s for s in statements if s.startswith(("DEALLOCATE", "ROLLBACK"))]


def test_round_trips_per_outcome(measurement: Measurement) -> None:
    """Counted as Syncs and Queries: 1 for every outcome, 2 when a conflict at COMMIT is
    retried (the failed attempt and the one that commits)."""
    trips = {
        t.case.name: sum(m.kind in ("Sync", "Query") for m in t.messages) for t in measurement.dsql
    }
    assert trips == {
        "committed": 1,
        "insufficient_funds": 1,
        "payer_not_found": 1,
        "payee_not_found": 1,
        "same_account": 1,
        "invalid_amount": 1,
        "balance_overflow": 1,
        "duplicate": 1,
        "conflicting_duplicate": 1,
        "retried_conflict": 2,
        "pool_check": 1,
        "batch": 1,
    }


def test_undocumented_statement_is_refused(measurement: Measurement) -> None:
    """A statement no documentation entry covers stops the generator."""
    transcript = measurement.dsql[0]
    odd = Message("Parse", 1, sql="LOCK TABLE accounts")
    changed = dsql_statements.Transcript(
        transcript.case, transcript.outcome, (*transcript.messages, odd), {}
    )
    with pytest.raises(dsql_statements.Undocumented, match="LOCK TABLE"):
        dsql_statements.render_support([changed])


def _typed(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!i", len(body) + 4) + body


def test_wire_log_decodes_messages_split_anywhere() -> None:
    """Messages fed one byte at a time decode like whole ones, server errors included."""
    startup = struct.pack("!i", 196608) + b"user\0me\0database\0db\0\0"
    client = (
        struct.pack("!i", len(startup) + 4)
        + startup
        + _typed(b"P", b"s1\0SELECT $1\0" + struct.pack("!h", 0))
        + _typed(b"B", b"\0s1\0" + struct.pack("!hhih", 0, 1, 1, 0) + b"7" + b"\0\0")
        + _typed(b"D", b"P\0")
        + _typed(b"E", b"\0" + struct.pack("!i", 0))
        + _typed(b"S", b"")
    )
    server = _typed(b"E", b"SERROR\0C40001\0Mconflict (OC000)\0\0")
    with WireLog(("127.0.0.1", 9)) as log:
        for i in range(len(client)):
            log.observe(1, client[i : i + 1], from_client=True)
        for i in range(len(server)):
            log.observe(1, server[i : i + 1], from_client=False)
        messages = log.messages()
        prepared = log.prepared()
    assert [m.kind for m in messages] == [
        "StartupMessage", "Parse", "Bind", "Describe", "Execute", "Sync", "ErrorResponse"
    ]  # fmt: skip
    assert messages[0].startup == (("user", "me"), ("database", "db"))
    assert (messages[1].name, messages[1].sql) == ("s1", "SELECT $1")
    assert (messages[2].name, messages[2].params) == ("s1", 1)
    assert (messages[6].sqlstate, messages[6].text) == ("40001", "conflict (OC000)")
    assert prepared == {(1, "s1"): "SELECT $1"}
