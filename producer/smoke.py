"""``python -m producer smoke``: prove the product against a real cluster in a minute.

With ``DSQL_ENDPOINT`` (and AWS credentials allowed ``dsql:DbConnectAdmin``) it runs
against that cluster; with ``DATABASE_URL`` against that PostgreSQL; with neither, on
an embedded PostgreSQL (what ``make test`` does). Everything happens in a throwaway
schema, dropped at the end, so the real tables are never touched:

1. ``migrate`` into the schema (tables, ASYNC indexes on DSQL, the lease);
2. set up a few accounts and their baseline;
3. a few hundred transfers from several threads at once: crossing pairs on hot
   accounts (conflicts on DSQL, row locks on PostgreSQL), every kind of rejection,
   exact duplicates and a conflicting duplicate; each outcome is checked against what
   that request must get (:mod:`producer.smoke_transfers`);
4. EXPLAIN ANALYZE of the transfer's statements and the history query (rolled back);
5. the audit: money conserved, no negative balance, every account explained by its
   committed results;
6. drop the schema.

:func:`run_smoke` returns a short report, which the command
(:mod:`producer.commands.smoke`) prints: round trips per committed transfer (median
transfer time over the median ``SELECT 1`` time on the same pool), latency
percentiles, retries, and PASS or FAIL (exit 0 or 1).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from producer.accounts import reset_accounts
from producer.audit import run_audit
from producer.smoke_transfers import (
    ACCOUNTS,
    BALANCE,
    batch_step,
    round_trip_step,
    transfer_steps,
    workload,
)
from worker.db import connect, create_pool
from worker.errors import NotConfigured, one_line
from worker.ops.explain import explain_transfer
from worker.ops.migrate import migrate
from worker.ops.schema import TABLES, table_name
from worker.settings import Settings, Statements


@dataclass
class SmokeReport:
    """What the run found; ``passed`` when every check held."""

    target: str
    schema: str
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def step(self, name: str, detail: str, problems: list[str] | None = None) -> None:
        """Record one step: ``ok`` with its detail, or FAIL with its problems."""
        problems = problems or []
        self.failures += [f"{name}: {p}" for p in problems]
        self.lines.append(f"  {name:<22} {'FAIL' if problems else 'ok'}  {detail}")
        for problem in problems[:10]:
            self.lines.append(f"{' ' * 27}- {problem}")

    def render(self) -> str:
        """The report as printed."""
        head = f"SMOKE  {self.target}  schema {self.schema}"
        return "\n".join([head, *self.lines, "PASS" if self.passed else "FAIL"]) + "\n"


@contextmanager
def target_settings(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """The configured database, or an embedded PostgreSQL when none is configured."""
    if settings.dsql_endpoint:
        yield settings, f"dsql {settings.dsql_endpoint}"
    elif settings.database_url is not None:
        yield settings, "postgres (DATABASE_URL)"
    else:
        try:
            from sandbox.postgres import EmbeddedPostgres  # dev only: not in the image
        except ImportError:
            raise NotConfigured(
                "set DSQL_ENDPOINT or DATABASE_URL (an embedded PostgreSQL needs the "
                "development install: make test)"
            ) from None

        with EmbeddedPostgres() as pg:
            url = SecretStr(pg.url)
            yield settings.model_copy(update={"database_url": url}), "postgres (embedded)"


def run_smoke(
    settings: Settings, *, transfers: int = 240, threads: int = 8, seed: int | None = None
) -> SmokeReport:
    """Run every step in a throwaway schema and return the report (the schema is gone)."""
    schema = f"smoke_{uuid.uuid4().hex[:10]}"
    rng = random.Random(seed)
    with target_settings(settings) as (base, target):
        scoped = base.model_copy(update={"db_schema": schema})
        report = SmokeReport(target, schema)
        try:
            _migrate(scoped, report)
            _setup(scoped)
            report.step("setup", f"{ACCOUNTS} accounts of {BALANCE}")
            with create_pool(scoped, min_size=1, max_size=threads) as pool:
                pool.wait()
                _both_engines(pool, rng, transfers, threads, report)
            _explain(scoped, report)
            _audit(scoped, report)
        except Exception as exc:  # noqa: BLE001 - a smoke test reports, it does not crash
            report.step("error", "", [f"{type(exc).__name__}: {one_line(exc)}"])
        finally:
            _drop(base, schema, report)
    return report


def _both_engines(
    pool: Any, rng: random.Random, transfers: int, threads: int, report: SmokeReport
) -> None:
    """The workload once per way of sending a transfer, then which ones the server took."""
    accepted = []
    for statements in Statements:
        failures = len(report.failures)
        try:
            for step in transfer_steps(pool, workload(rng, transfers), threads, statements):
                report.step(*step)
            report.step(*round_trip_step(pool, statements))
        except psycopg.Error as exc:
            report.step(f"transfers [{statements.value}]", "", [f"refused: {one_line(exc)}"])
        if len(report.failures) == failures:
            accepted.append(statements.value)
    if Statements.SINGLE.value in accepted:
        report.step(*batch_step(pool))
    report.step(
        "engine",
        "this server runs ENGINE_STATEMENTS=" + " and ".join(accepted) if accepted else "",
        [] if accepted else ["neither way of sending a transfer worked"],
    )


def _migrate(settings: Settings, report: SmokeReport) -> None:
    started = time.monotonic()
    with connect(settings) as conn:
        # Roles are cluster-wide; the smoke test leaves them to a real `migrate`.
        result = migrate(conn, settings.backend, schema=settings.db_schema)
    report.step("migrate", f"{len(result.created)} objects in {time.monotonic() - started:.1f} s")


def _setup(settings: Settings) -> None:
    reset_accounts(settings, ACCOUNTS, BALANCE, parallelism=2)


def _explain(settings: Settings, report: SmokeReport) -> None:
    with connect(settings) as conn:
        plans = explain_transfer(conn)
    missing = [p.name for p in plans if not p.lines]
    report.step("explain", f"{len(plans)} plans: " + ", ".join(p.name for p in plans), missing)


def _audit(settings: Settings, report: SmokeReport) -> None:
    with connect(settings) as conn:
        audit = run_audit(conn)
    report.step(
        "audit",
        f"{audit.accounts} accounts, total {audit.total}, {audit.committed_transfers} committed",
        audit.violations,
    )


def _drop(settings: Settings, schema: str, report: SmokeReport) -> None:
    """Drop the throwaway schema, one DDL per transaction (DSQL), tables first."""
    try:
        with connect(settings, autocommit=True) as conn:
            for ddl in reversed(TABLES):
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table_name(ddl))
                    )
                )
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        report.step("cleanup", "", [f"could not drop schema {schema}: {exc}"])
        return
    report.step("cleanup", f"schema {schema} dropped")
