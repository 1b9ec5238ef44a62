"""What the transfer engine sends to the database, per outcome, measured on the wire.

Runs the real :class:`~worker.engine.TransferEngine` on a pool configured as on DSQL
(autocommit, ``prepare_threshold=None``) through :class:`~sandbox.wirelog.WireLog`,
once per outcome, and writes the message sequences into ``docs/dsql-statements.md``
together with the documentation that says DSQL accepts each statement and message.
The same run on psycopg's default settings shows what DSQL no longer gets.

The document's prose is written by hand; the blocks between ``<!-- generated: NAME -->``
and ``<!-- end generated: NAME -->`` come from here::

    python -m sandbox.dsql_statements --write docs/dsql-statements.md   # regenerate
    python -m sandbox.dsql_statements --check docs/dsql-statements.md   # 1 if stale

``tests/test_wire.py`` runs :func:`measure` and fails when the document differs, so
an engine change that alters what goes on the wire is a regeneration away from a
green test, and a statement or message nobody has shown DSQL to accept is an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from producer.accounts import reset_accounts
from sandbox.dsql_faults import DsqlFaults
from sandbox.postgres import EmbeddedPostgres
from sandbox.wirelog import Message, WireLog
from worker.contract import TransferRequest
from worker.db import TransferPool, connect, create_pool, purge_broken
from worker.engine import TransferEngine
from worker.ops.migrate import migrate
from worker.outcomes import TransferResult
from worker.settings import Backend, Settings, Statements

DOCUMENT = Path("docs/dsql-statements.md")
PREPARE_COST = Path("bench/prepare_threshold.json")
"""Written by ``python -m bench.prepare``; rendered into the document when present."""

# --- where DSQL says it accepts each thing ---------------------------------------------

GUIDE = "https://docs.aws.amazon.com/aurora-dsql/latest/userguide/"
GRAMMAR = "awslabs/aurora-dsql-tools `dsql-lint/grammar/dsql_grammar.json`"


@dataclass(frozen=True)
class Support:
    """Why we believe DSQL accepts a statement or message, and what is not documented."""

    label: str
    sources: tuple[str, ...]
    gap: str = ""


STATEMENTS: tuple[tuple[re.Pattern[str], Support], ...] = (
    (
        re.compile(r"START TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
        Support(
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ (the pipelined variant)",
            (
                f"{GRAMMAR}: `TransactionStmt` = `START TRANSACTION "
                "transaction_mode_list_or_empty`, `transaction_mode_item` = `ISOLATION "
                "LEVEL iso_level`, `iso_level` = `REPEATABLE READ` only",
                f"user guide, [Concurrency control]({GUIDE}working-with-concurrency-"
                "control.html): one isolation level, PostgreSQL's repeatable read",
            ),
            "the guide's TCL table shows BEGIN; this is the grammar's form",
        ),
    ),
    (
        re.compile(r"COMMIT"),
        Support(
            "COMMIT",
            (
                f"user guide, [Supported SQL]({GUIDE}working-with-postgresql-compatibility-"
                "supported-sql-features.html) (TCL): `COMMIT`",
                f"{GRAMMAR}: `TransactionStmt` = `COMMIT opt_transaction`",
            ),
        ),
    ),
    (
        re.compile(r"ROLLBACK"),
        Support(
            "ROLLBACK",
            (f"{GRAMMAR}: `TransactionStmt` = `ROLLBACK opt_transaction`",),
            "the guide's TCL table lists BEGIN and COMMIT only",
        ),
    ),
    (
        re.compile(r"SELECT 1"),
        Support(
            "SELECT 1 (the pool's connection check)",
            (
                f"user guide, [Supported SQL]({GUIDE}working-with-postgresql-compatibility-"
                "supported-sql-features.html): `SELECT`",
                f"{GRAMMAR}: `SelectStmt`",
            ),
        ),
    ),
    (
        re.compile(r"SELECT [\w, ]+ FROM \w+ WHERE \w+ = \$1"),
        Support(
            "SELECT columns FROM table WHERE key = $1",
            (
                f"user guide, [Supported SQL]({GUIDE}working-with-postgresql-compatibility-"
                "supported-sql-features.html): `SELECT` ... `FROM`",
                f"{GRAMMAR}: `SelectStmt`",
            ),
        ),
    ),
    (
        re.compile(
            r"WITH earlier AS \(SELECT .* LEFT JOIN earlier ON true LEFT JOIN recorded ON true"
        ),
        Support(
            "WITH ... AS (SELECT), ... AS (INSERT ... ON CONFLICT DO NOTHING RETURNING), "
            "... AS (UPDATE ... RETURNING) SELECT ... (the one-statement transfer)",
            (
                f"{GRAMMAR}: `common_table_expr` = `name opt_name_list AS opt_materialized "
                "'(' PreparableStmt ')'`, and `PreparableStmt` includes `InsertStmt` and "
                "`UpdateStmt`: data-modifying statements inside WITH parse",
                f"user guide, [Supported SQL]({GUIDE}working-with-postgresql-compatibility-"
                "supported-sql-features.html): `SELECT` with `WITH` (common table "
                "expressions), `INSERT`, `UPDATE`",
            ),
            "the guide describes WITH for SELECT; WITH clauses that write are only in the "
            "grammar. `python -m producer smoke` runs it on a real cluster, and "
            "ENGINE_STATEMENTS=pipelined sends documented statements instead",
        ),
    ),
    (
        re.compile(r"WITH input AS \(SELECT \* FROM unnest\(.* ORDER BY i\.ordinal"),
        Support(
            "WITH input AS (SELECT * FROM unnest($1::int[], ...)), ... (INSERT ... SELECT "
            "... ON CONFLICT DO NOTHING RETURNING), ... (UPDATE ... FROM ... RETURNING) "
            "SELECT ... (TRANSFER_BATCH: k transfers in one statement)",
            (
                f"user guide, [Supported data types]({GUIDE}working-with-postgresql-"
                "compatibility-supported-data-types.html) (query runtime data types): "
                "arrays as parameters and expressions, not as columns",
                f"{GRAMMAR}: `func_table` in `table_ref` (a set-returning function in "
                "FROM, `unnest` with several arrays included), `common_table_expr` with "
                "`InsertStmt` and `UpdateStmt`, `UpdateStmt` = `... SET ... from_clause "
                "where_or_current_clause returning_clause`",
            ),
            "unnest and WITH clauses that write are in the grammar, not in the guide. "
            "`python -m producer smoke` runs a batch; a server that refuses it costs "
            "one round trip, then the worker applies one transfer at a time",
        ),
    ),
    (
        re.compile(
            r"INSERT INTO \w+ \([\w, ]+\) SELECT .* WHERE NOT EXISTS \(.*\)"
            r" ON CONFLICT \(\w+\) DO NOTHING RETURNING [\w, ]+"
        ),
        Support(
            "INSERT INTO ... SELECT ... WHERE NOT EXISTS (...) ON CONFLICT (key) DO NOTHING "
            "RETURNING (the pipelined variant's RECORD)",
            (
                f"user guide, [Supported SQL]({GUIDE}working-with-postgresql-compatibility-"
                "supported-sql-features.html) (DML): `INSERT INTO ... SELECT`",
                f"{GRAMMAR}: `InsertStmt` = `opt_with_clause INSERT INTO insert_target "
                "insert_rest opt_on_conflict returning_clause`, `opt_on_conflict` includes "
                "`ON CONFLICT opt_conf_expr DO NOTHING`",
            ),
            "ON CONFLICT and RETURNING are in the grammar, not in the guide's DML table",
        ),
    ),
    (
        re.compile(r"UPDATE \w+ SET \w+ = \w+ \+ CASE .* WHERE \w+ IN \(.*\) AND EXISTS \(.*\)"),
        Support(
            "UPDATE ... SET ... = ... + CASE ... WHERE id IN (...) AND EXISTS (subquery) "
            "(the pipelined variant's MOVE)",
            (
                f"user guide, [Supported SQL]({GUIDE}working-with-postgresql-compatibility-"
                "supported-sql-features.html) (DML): `UPDATE` `SET`, `WHERE`; subqueries "
                "and `CASE` expressions",
                f"{GRAMMAR}: `UpdateStmt`",
            ),
        ),
    ),
    (
        re.compile(r"DEALLOCATE ALL"),
        Support(
            "DEALLOCATE ALL (psycopg's default configuration only)",
            (f"{GRAMMAR}: `DeallocateStmt` = `DEALLOCATE ALL`",),
            "nothing says whether it is accepted inside a transaction, where psycopg sends it",
        ),
    ),
)

WIRE_PROTOCOL = (
    f"user guide, [Aurora DSQL and PostgreSQL]({GUIDE}working-with.html): the standard "
    "PostgreSQL v3 wire protocol; compatible with psql, pgjdbc and psycopg"
)

MESSAGES: dict[str, Support] = {
    label: Support(label, (WIRE_PROTOCOL,), gap)
    for label, gap in (
        ("Parse (unnamed statement)", ""),
        ("Bind (unnamed statement)", ""),
        ("Describe (portal)", ""),
        ("Execute", ""),
        ("Sync", ""),
        ("Flush", ""),
        ("Query (simple protocol)", ""),
        (
            "Parse (named statement)",
            "named statements' lifetime (across ROLLBACK, DEALLOCATE) is not documented",
        ),
        ("Bind (named statement)", "see Parse (named statement)"),
    )
}


class Undocumented(ValueError):
    """The engine sent something no entry of :data:`STATEMENTS` or :data:`MESSAGES`
    covers: find DSQL's documentation for it (or stop sending it) first."""


def statement_support(text: str) -> Support | None:
    """The :data:`STATEMENTS` entry whose pattern matches all of ``text``."""
    for pattern, support in STATEMENTS:
        if pattern.fullmatch(text):
            return support
    return None


def message_label(message: Message) -> str:
    """The :data:`MESSAGES` key for a client message."""
    named = "named statement" if message.name else "unnamed statement"
    if message.kind in ("Parse", "Bind"):
        return f"{message.kind} ({named})"
    if message.kind in ("Describe", "Close"):
        return f"{message.kind} ({'statement' if message.target == 'S' else 'portal'})"
    if message.kind == "Query":
        return "Query (simple protocol)"
    return message.kind


# --- the measurement -------------------------------------------------------------------


def flat(text: str) -> str:
    """SQL on one line, runs of whitespace as one space."""
    return " ".join(text.split())


def _request(payer: int, payee: int, amount: str, transfer_id: uuid.UUID | None = None) -> Any:
    return TransferRequest(
        transfer_id=transfer_id or uuid.uuid4(),
        payer_id=payer,
        payee_id=payee,
        amount=Decimal(amount),
    )


FIRST = _request(1, 2, "1")
"""The committed transfer the duplicate cases repeat."""


@dataclass(frozen=True)
class Bench:
    """What a case runs against."""

    engine: TransferEngine
    pool: TransferPool
    faults: DsqlFaults


def _outcome(result: TransferResult) -> str:
    """``status (reason)``, as the transcripts show an outcome."""
    return result.status.value + (f" ({result.reason.value})" if result.reason else "")


def _apply(request: TransferRequest) -> Callable[[Bench], str]:
    def run(bench: Bench) -> str:
        result = bench.engine.apply(request)
        outcome = _outcome(result)
        extras = [f"attempts={result.attempts}"] + (["duplicate"] if result.duplicate else [])
        return f"{outcome}, {', '.join(extras)}"

    return run


def _retried(bench: Bench) -> str:
    bench.faults.conflict_at_commit(next_commits=1)
    return _apply(_request(7, 8, "1"))(bench)


def _pool_check(bench: Bench) -> str:
    purge_broken(bench.pool)
    return "every idle connection answered"


@dataclass(frozen=True)
class Case:
    """One outcome: its name, what it shows, and how to produce it."""

    name: str
    title: str
    run: Callable[[Bench], str]


CASES: tuple[Case, ...] = (
    Case("committed", "Committed", _apply(FIRST)),
    Case("insufficient_funds", "Rejected: insufficient funds", _apply(_request(3, 4, "1000"))),
    Case("payer_not_found", "Rejected: payer not found", _apply(_request(99, 1, "1"))),
    Case("payee_not_found", "Rejected: payee not found", _apply(_request(1, 99, "1"))),
    Case("same_account", "Rejected by validation: same account", _apply(_request(5, 5, "1"))),
    Case("invalid_amount", "Rejected by validation: invalid amount", _apply(_request(1, 2, "0"))),
    Case(
        "balance_overflow",
        "Rejected: balance overflow (the payee holds 999,999,999,999)",
        _apply(_request(6, 10, "50")),
    ),
    Case("duplicate", "Duplicate (a repeat of the committed transfer)", _apply(FIRST)),
    Case(
        "conflicting_duplicate",
        "Conflicting duplicate (the committed transfer's id, another amount)",
        _apply(FIRST.model_copy(update={"amount": Decimal(2)})),
    ),
    Case(
        "retried_conflict",
        "Retried conflict (the first COMMIT fails with OC000, as DSQL fails it)",
        _retried,
    ),
    Case("pool_check", "Pool check after a connection fault (`purge_broken`)", _pool_check),
)


def _batch(bench: Bench) -> str:
    items = [_request(3, 4, "1"), _request(5, 6, "1000"), _request(7, 99, "1"), FIRST]
    batched = bench.engine.apply_batch([(item, None) for item in items])
    outcomes = [
        _outcome(o) + (", duplicate" if o.duplicate else "")
        if isinstance(o, TransferResult)
        else type(o).__name__
        for o in batched.outcomes
    ]
    return "; ".join(outcomes) + (", fell back" if batched.fell_back else "")


BATCH_CASES: tuple[Case, ...] = (
    Case(
        "batch",
        "A batch (TRANSFER_BATCH): four transfers on disjoint accounts, one statement "
        "(committed, insufficient funds, payee not found, a repeat of the committed transfer)",
        _batch,
    ),
)
"""Only with ENGINE_STATEMENTS=single: the pipelined variant does not batch."""

DEFAULT_CASES: tuple[Case, ...] = (
    Case(
        "default_committed",
        "Committed, the 6th time on a connection",
        _apply(_request(1, 2, "1")),
    ),
    Case(
        "default_insufficient_funds",
        "Rejected: insufficient funds, right after",
        _apply(_request(3, 4, "1000")),
    ),
    Case(
        "default_committed_after_rollback",
        "Committed, right after that ROLLBACK",
        _apply(_request(1, 2, "1")),
    ),
)


@dataclass(frozen=True)
class Transcript:
    """What one case sent (and the errors it got back), and what the engine returned."""

    case: Case
    outcome: str
    messages: tuple[Message, ...]
    prepared: dict[tuple[int, str], str]
    """The named statements the connection had prepared, by (connection, name)."""


@dataclass(frozen=True)
class Measurement:
    """Transcripts on the DSQL configuration and on psycopg's defaults."""

    dsql: tuple[Transcript, ...]
    """ENGINE_STATEMENTS=single (the default), on DSQL's connection settings."""
    pipelined: tuple[Transcript, ...]
    """ENGINE_STATEMENTS=pipelined, on DSQL's connection settings."""
    default: tuple[Transcript, ...]


def measure(settings: Settings) -> Measurement:
    """Run every case through a wire log; ``settings`` points at a migrated database
    whose accounts and results this replaces."""
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    reset_accounts(settings, 10, Decimal(100))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET balance = 999999999999 WHERE id = 10")
    faults = DsqlFaults(url).install()
    try:
        dsql = _run(settings, faults, CASES + BATCH_CASES, prepare_threshold=None, warm_up=1)
        reset_accounts(settings, 10, Decimal(100))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE accounts SET balance = 999999999999 WHERE id = 10")
        pipelined = _run(
            settings,
            faults,
            CASES,
            prepare_threshold=None,
            warm_up=1,
            statements=Statements.PIPELINED,
        )
        # psycopg prepares a statement on its 5th execution (prepare_threshold=5).
        default = _run(settings, faults, DEFAULT_CASES, prepare_threshold=5, warm_up=5)
    finally:
        faults.off()
        faults.uninstall()
    return Measurement(dsql, pipelined, default)


def _run(
    settings: Settings,
    faults: DsqlFaults,
    cases: Sequence[Case],
    *,
    prepare_threshold: int | None,
    warm_up: int,
    statements: Statements = Statements.SINGLE,
) -> tuple[Transcript, ...]:
    with _logged_pool(settings, prepare_threshold) as (pool, log):
        bench = Bench(TransferEngine(pool, statements=statements), pool, faults)
        for _ in range(warm_up):
            _apply(_request(1, 2, "1"))(bench)
        transcripts = []
        for case in cases:
            _barrier(pool, log)
            outcome = case.run(bench)
            messages = _barrier(pool, log)
            transcripts.append(Transcript(case, outcome, messages, log.prepared()))
    return tuple(transcripts)


BARRIER = "SELECT 'wirelog barrier'"


def _barrier(pool: TransferPool, log: WireLog) -> tuple[Message, ...]:
    """What the log holds before a marker query sent on the (only) pooled connection,
    then an empty log. The marker travels behind every byte the client sent before it,
    so nothing of one case (a trailing Flush, say) spills into the next, and it goes
    around psycopg, so the case after it sees the connection exactly as left."""
    with pool.connection() as conn:
        # libpq directly: through psycopg the marker would carry psycopg's queued
        # maintenance (the DEALLOCATE ALL after a ROLLBACK) away from the next case.
        result = conn.pgconn.exec_(BARRIER.encode())
        assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
    messages = log.messages()
    log.reset()
    end = next(i for i, m in enumerate(messages) if m.sql == BARRIER)
    return tuple(messages[:end])


@contextmanager
def _logged_pool(
    settings: Settings, prepare_threshold: int | None
) -> Iterator[tuple[TransferPool, WireLog]]:
    """A one-connection pool whose connection goes through a wire log.

    ``create_pool``'s PostgreSQL pool, except for ``prepare_threshold``: on DSQL the
    product sets it to None (see worker.db); the embedded server stands in for DSQL.
    """
    assert settings.database_url is not None
    info = conninfo_to_dict(settings.database_url.get_secret_value())
    with WireLog((str(info.get("host") or "127.0.0.1"), int(str(info["port"])))) as log:
        proxied = make_conninfo(**{**info, "host": "127.0.0.1", "port": str(log.port)})  # type: ignore[arg-type]
        pool = create_pool(
            settings.model_copy(update={"database_url": SecretStr(proxied)}),
            min_size=1,
            max_size=1,
            name="wirelog",
        )
        assert isinstance(pool.kwargs, dict)
        pool.kwargs["prepare_threshold"] = prepare_threshold
        with pool:
            pool.wait()
            yield pool, log


# --- the document ----------------------------------------------------------------------


def rows(transcript: Transcript) -> list[tuple[str, str]]:
    """(messages, statement) rows: a statement's Parse/Bind/Describe/Execute together,
    Sync and Flush on rows of their own.

    A server error is shown after the Sync (and Flush) of the round trip it answers,
    wherever it arrived in between, so the table does not depend on timing. A Bind of
    a named statement shows the SQL that statement was prepared with.
    """
    out: list[tuple[list[str], str]] = []
    errors: list[Message] = []
    for message in transcript.messages:
        if not message.from_client:
            errors.append(message)
            continue
        if errors and message.kind not in ("Sync", "Flush"):
            out += [([f"← ErrorResponse {e.sqlstate}"], e.text) for e in errors]
            errors.clear()
        part = _part(message)
        statement = f"`{flat(message.sql)}`" if message.sql is not None else ""
        if message.kind == "Bind" and message.name:
            prepared = transcript.prepared.get((message.connection, message.name))
            statement = f"(prepared) `{flat(prepared)}`" if prepared else "(prepared)"
        if message.kind == "Bind":
            starts_row = not out or not out[-1][0][-1].startswith("Parse")
        else:
            starts_row = message.kind not in ("Describe", "Execute")
        if starts_row or out[-1][0][0].startswith(("Sync", "Flush", "←")):
            out.append(([part], statement))
        else:
            out[-1][0].append(part)
    out += [([f"← ErrorResponse {e.sqlstate}"], e.text) for e in errors]
    return [(", ".join(parts), statement) for parts, statement in out]


def _part(message: Message) -> str:
    if message.kind in ("Parse", "Bind") and message.name:
        text = f"{message.kind} `{message.name}`"
    else:
        text = message.kind
    if message.kind == "Bind" and message.params:
        text += f" ({message.params} param{'s' if message.params > 1 else ''})"
    if message.kind in ("Describe", "Close"):
        text += " portal" if message.target == "P" else f" statement `{message.name}`"
    return text


def render_transcripts(transcripts: Sequence[Transcript]) -> str:
    """A section per case: the outcome, round trips, and the message table."""
    parts = []
    for transcript in transcripts:
        trips = sum(m.kind in ("Sync", "Query") for m in transcript.messages)
        parts.append(
            f"#### {transcript.case.title}\n\n"
            f"Result: {transcript.outcome}. Round trips: {trips} (a Sync or a Query waits "
            "for the server).\n\n"
            "| # | messages | statement |\n| --- | --- | --- |\n"
            + "".join(
                f"| {i} | {messages} | {_cell(statement)} |\n"
                for i, (messages, statement) in enumerate(rows(transcript), 1)
            )
        )
    return "\n".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_support(transcripts: Sequence[Transcript]) -> str:
    """Every statement and message kind the DSQL configuration sent, with its sources.

    Raises :class:`Undocumented` for anything without an entry.
    """
    statements: dict[str, tuple[Support, list[str]]] = {}
    labels: dict[str, list[str]] = {}
    missing: list[str] = []
    for transcript in transcripts:
        for message in transcript.messages:
            if not message.from_client:
                continue
            label = message_label(message)
            if label not in MESSAGES:
                missing.append(f"message {label}")
            labels.setdefault(label, [])
            if transcript.case.name not in labels[label]:
                labels[label].append(transcript.case.name)
            if message.sql is None:
                continue
            text = flat(message.sql)
            support = statement_support(text)
            if support is None:
                missing.append(f"statement {text!r}")
                continue
            cases = statements.setdefault(text, (support, []))[1]
            if transcript.case.name not in cases:
                cases.append(transcript.case.name)
    if missing:
        raise Undocumented("no documented DSQL support for: " + "; ".join(sorted(set(missing))))
    out = ["| statement | sent in | documented by | not documented |", "| --- | --- | --- | --- |"]
    for text, (support, cases) in statements.items():
        out.append(
            f"| `{text}` | {', '.join(cases)} | {'<br>'.join(support.sources)} "
            f"| {support.gap or '-'} |"
        )
    out += ["", "| message | sent in | documented by | not documented |"]
    out += ["| --- | --- | --- | --- |"]
    for label, cases in labels.items():
        support = MESSAGES[label]
        shown = ", ".join(cases) if len(cases) < len(transcripts) else "every case"
        out.append(f"| {label} | {shown} | {support.sources[0]} | {support.gap or '-'} |")
    return "\n".join(out) + "\n"


def render_prepare_cost(path: Path = PREPARE_COST) -> str:
    """The bench's prepare_threshold measurement, or a note that there is none yet."""
    if not path.exists():
        return f"Not measured yet: run `python -m bench.prepare` (writes `{path}`).\n"
    data = json.loads(path.read_text())
    lines = [
        f"`{data['command']}` on {data['machine']}, {data['date']}: "
        f"{data['repeats']} alternating runs of {data['duration_s']:g} s per setting "
        f"and concurrency, medians.",
        "",
        "| threads | psycopg default (5) tps | prepare_threshold=None tps | change |",
        "| --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['concurrency']} | {row['default_tps']:,.0f} | {row['none_tps']:,.0f} "
            f"| {row['change_pct']:+.1f} % |"
        )
    return "\n".join(lines) + "\n"


BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.DOTALL,
)


def render(measurement: Measurement, document: str) -> str:
    """``document`` with every generated block replaced by the measurement's."""
    blocks = {
        "outcomes": render_transcripts(measurement.dsql),
        "pipelined-outcomes": render_transcripts(measurement.pipelined),
        "support": render_support((*measurement.dsql, *measurement.pipelined)),
        "psycopg-default": render_transcripts(measurement.default),
        "prepare-cost": render_prepare_cost(),
    }
    seen: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in blocks:
            raise ValueError(f"unknown generated block {name!r}")
        seen.add(name)
        return match.group(1) + "\n" + blocks[name] + "\n" + match.group(4)

    text = BLOCK.sub(replace, document)
    if seen != set(blocks):
        raise ValueError(f"document lacks generated blocks: {sorted(set(blocks) - seen)}")
    return text


# --- command line ------------------------------------------------------------------------


def measure_on_embedded_postgres() -> Measurement:
    """:func:`measure` on a throwaway embedded PostgreSQL."""
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("wirelog")))
        info = conninfo_to_dict(pg.url)
        settings = Settings(
            database_url=SecretStr(make_conninfo(**{**info, "dbname": "wirelog"})),  # type: ignore[arg-type]
            pool_min_size=1,
        )
        with connect(settings) as conn:
            migrate(conn, Backend.POSTGRES)
        return measure(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """``--write PATH`` regenerates the document's blocks; ``--check PATH`` exits 1 if
    they are stale."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.dsql_statements")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="PATH")
    action.add_argument("--check", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    path: Path = args.write or args.check
    current = path.read_text()
    updated = render(measure_on_embedded_postgres(), current)
    if args.check:
        if updated != current:
            print(f"{path} is stale: run python -m sandbox.dsql_statements --write {path}")
            return 1
        return 0
    path.write_text(updated)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
