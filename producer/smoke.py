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
   that request must get;
4. EXPLAIN ANALYZE of the transfer's statements and the history query (rolled back);
5. the audit: money conserved, no negative balance, every account explained by its
   committed results;
6. drop the schema.

It prints a short report: round trips per committed transfer (median transfer time
over the median ``SELECT 1`` time on the same pool), latency percentiles, retries,
and PASS or FAIL (exit 0 or 1).
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from producer.accounts import reset_accounts
from producer.audit import run_audit
from producer.stats import latency_summary
from worker.contract import TransferRequest
from worker.db import connect, create_pool
from worker.engine import TransferEngine
from worker.errors import NotConfigured
from worker.ops.explain import explain_transfer
from worker.ops.migrate import migrate
from worker.ops.schema import TABLES, table_name
from worker.outcomes import Reason, Status, TransferResult
from worker.settings import Settings

if TYPE_CHECKING:
    from producer.cli import Subparsers

ACCOUNTS = 10
BALANCE = Decimal(10_000)
LOOPBACK_RTT_S = 0.0002
"""Below this a round trip is local: the latency ratio would measure CPU, not the wire."""
MISSING = 2_000_000_000
"""An account id that setup never creates."""


@dataclass(frozen=True)
class Expected:
    """A request and the outcome it must get."""

    request: TransferRequest
    status: Status
    reason: Reason | None = None
    duplicate: bool = False


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
        self.lines.append(f"  {name:<13} {'FAIL' if problems else 'ok'}  {detail}")
        for problem in problems[:10]:
            self.lines.append(f"                  - {problem}")

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
                _transfers(pool, _workload(rng, transfers), threads, report)
                _round_trips(pool, report)
            _explain(scoped, report)
            _audit(scoped, report)
        except Exception as exc:  # noqa: BLE001 - a smoke test reports, it does not crash
            report.step("error", "", [f"{type(exc).__name__}: {' '.join(str(exc).split())}"])
        finally:
            _drop(base, schema, report)
    return report


def _migrate(settings: Settings, report: SmokeReport) -> None:
    started = time.monotonic()
    with connect(settings) as conn:
        # Roles are cluster-wide; the smoke test leaves them to a real `migrate`.
        result = migrate(conn, settings.backend, schema=settings.db_schema)
    report.step("migrate", f"{len(result.created)} objects in {time.monotonic() - started:.1f} s")


def _setup(settings: Settings) -> None:
    reset_accounts(settings, ACCOUNTS, BALANCE, parallelism=2)


def _workload(rng: random.Random, transfers: int) -> list[Expected]:
    """Contended transfers, each kind of rejection, duplicates, a conflicting duplicate."""

    def request(payer: int, payee: int, amount: Decimal | str) -> TransferRequest:
        return TransferRequest(
            transfer_id=uuid.uuid4(), payer_id=payer, payee_id=payee, amount=Decimal(amount)
        )

    work: list[Expected] = []
    for i in range(transfers):
        # Crossing pairs on three hot accounts: A->B next to B->A.
        payer, payee = (1, 2) if i % 3 == 0 else (2, 1) if i % 3 == 1 else (3, rng.randint(1, 2))
        if i % 4 == 3:
            payer, payee = rng.sample(range(1, ACCOUNTS + 1), 2)
        amount = Decimal(rng.randint(1, 500)) / 100
        work.append(Expected(request(payer, payee, amount), Status.COMMITTED))
    rejections = [
        (request(4, 5, BALANCE * 10), Reason.INSUFFICIENT_FUNDS),
        (request(MISSING, 5, "1"), Reason.PAYER_NOT_FOUND),
        (request(5, MISSING, "1"), Reason.PAYEE_NOT_FOUND),
        (request(6, 6, "1"), Reason.SAME_ACCOUNT),
        (request(6, 7, "0"), Reason.INVALID_AMOUNT),
        (request(6, 7, "0.0000001"), Reason.INVALID_AMOUNT),
    ]
    for _ in range(3):
        work += [Expected(r, Status.REJECTED, reason) for r, reason in rejections]
        rejections = [(request(r.payer_id, r.payee_id, r.amount), why) for r, why in rejections]
    # Repeats of some requests, sent alongside the originals.
    originals = rng.sample(work, 20)
    work += [Expected(e.request, e.status, e.reason, duplicate=True) for e in originals]
    rng.shuffle(work)
    first = next(e.request for e in work if e.status is Status.COMMITTED)
    conflicting = first.model_copy(update={"amount": first.amount + 1})
    work.append(Expected(conflicting, Status.REJECTED, Reason.CONFLICTING_DUPLICATE, True))
    return work


def _transfers(pool: Any, work: list[Expected], threads: int, report: SmokeReport) -> None:
    engine = TransferEngine(pool)

    def apply(expected: Expected) -> tuple[Expected, TransferResult, float]:
        started = time.perf_counter()
        result = engine.apply(expected.request)
        return expected, result, (time.perf_counter() - started) * 1000

    started = time.monotonic()
    # The conflicting duplicate must follow its original: run it last.
    with ThreadPoolExecutor(threads) as executor:
        done = list(executor.map(apply, work[:-1]))
    done.append(apply(work[-1]))
    elapsed = time.monotonic() - started

    problems, kinds = [], Counter[str]()
    seen: dict[uuid.UUID, int] = Counter()
    for expected, result, _ms in done:
        seen[expected.request.transfer_id] += 1
        kind = result.reason.value if result.reason else result.status.value
        conflicting = result.reason is Reason.CONFLICTING_DUPLICATE
        kinds["duplicate" if result.duplicate and not conflicting else kind] += 1
        if (result.status, result.reason) != (expected.status, expected.reason):
            problems.append(
                f"{expected.request.transfer_id}: {result.status}/{result.reason}, "
                f"expected {expected.status}/{expected.reason}"
            )
    # A duplicate may be the copy that ran first; per id, exactly one first outcome.
    firsts = Counter(e.request.transfer_id for e, r, _ in done if not r.duplicate)
    problems += [f"{tid}: {n} first outcomes" for tid, n in firsts.items() if n != 1]
    retries = [r.attempts - 1 for _, r, _ in done]
    report.step(
        "transfers",
        f"{len(done)} in {elapsed:.2f} s from {threads} threads: "
        + " ".join(f"{k}={v}" for k, v in sorted(kinds.items())),
        problems,
    )
    report.step(
        "retries",
        f"total={sum(retries)} max={max(retries)} per_transfer={sum(retries) / len(done):.3f}",
    )
    latency = latency_summary(ms for _, r, ms in done if r.committed and not r.duplicate)
    report.step(
        "latency ms",
        "no committed transfer"
        if latency is None
        else f"committed p50={latency.p50:.2f} p99={latency.p99:.2f} max={latency.max:.2f}",
    )


def _round_trips(pool: Any, report: SmokeReport) -> None:
    """Median uncontended transfer time over the median round trip, on one connection."""
    engine = TransferEngine(pool)
    pings, transfers = [], []
    with pool.connection() as conn:
        for _ in range(30):
            started = time.perf_counter()
            conn.execute("SELECT 1")
            pings.append(time.perf_counter() - started)
    for _ in range(30):
        request = TransferRequest(
            transfer_id=uuid.uuid4(), payer_id=8, payee_id=9, amount=Decimal("0.01")
        )
        started = time.perf_counter()
        engine.apply(request)
        transfers.append(time.perf_counter() - started)
    rtt, transfer = statistics.median(pings), statistics.median(transfers)
    timing = f"transfer p50 {transfer * 1000:.2f} ms, SELECT 1 p50 {rtt * 1000:.2f} ms"
    if rtt < LOOPBACK_RTT_S:
        # On loopback client CPU, not the network, sets the time: the ratio means
        # nothing (tests/test_round_trips.py counts them on the wire instead).
        report.step("round trips", f"not measurable on loopback ({timing})")
        return
    report.step("round trips", f"~{transfer / rtt:.1f} per committed transfer ({timing})")


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


def register(subparsers: Subparsers) -> None:
    """``smoke [--transfers N] [--threads T] [--seed S]``."""
    cmd = subparsers.add_parser(
        "smoke",
        help="check the product against DSQL_ENDPOINT (or DATABASE_URL, or an embedded "
        "PostgreSQL) in a throwaway schema; exit 1 on any failure",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    cmd.add_argument("--transfers", type=int, default=240, help="contended transfers (240)")
    cmd.add_argument("--threads", type=int, default=8, help="threads applying them (8)")
    cmd.add_argument("--seed", type=int, default=None, help="workload seed")
    cmd.set_defaults(handler=run_command)


def run_command(args: Any, settings: Settings) -> int:
    """Run the smoke test and print its report; 0 only when every check passed."""
    from worker.logs import configure_logging

    configure_logging(settings)
    report = run_smoke(settings, transfers=args.transfers, threads=args.threads, seed=args.seed)
    print(report.render(), end="")
    return 0 if report.passed else 1
