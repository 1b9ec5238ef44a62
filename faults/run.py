"""``make faults`` / ``python -m faults``: workload + faults + checker, Jepsen style.

Several real worker processes consume one queue (moto's SQS server over HTTP) and
write to one embedded PostgreSQL while a producer sends a seeded workload (see
:mod:`faults.workload`) and a nemesis injects faults:

- ``kill -9`` a worker mid-batch, then start a replacement;
- restart PostgreSQL in ``fast`` and in ``immediate`` (crash) mode;
- ``pg_terminate_backend`` every worker connection;
- ``SIGSTOP`` a worker past the visibility timeout, then ``SIGCONT`` it;
- ``SIGTERM`` a worker (graceful drain, must exit 0), then start a replacement;
- stop PostgreSQL for several retry budgets (an outage the workers must hold back
  through), then start it again.

The queue's redrive policy is the product's own, computed from the workers'
redelivery schedule (:data:`SCHEDULE`), so "no well-formed transfer in the DLQ" is a
real invariant, not one a huge maxReceiveCount makes true.

When the queue has drained, :mod:`faults.checker` checks every invariant. A failing
run prints its seed; ``--seed`` replays the same workload and fault order.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg

from faults.checker import Check, check_dead_letters, check_results
from faults.workload import Message, Workload, build
from producer.accounts import reset_accounts
from producer.load import BacklogGate
from sandbox.postgres import EmbeddedPostgres
from sandbox.processes import WorkerFleet, WorkerProcess, child_environment
from sandbox.sqs import LocalSqs, Queues
from worker.db import connect
from worker.ops.migrate import migrate
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings
from worker.transport.sqs import queue_depth, receive_all, send_messages

VISIBILITY_TIMEOUT_S = 5
"""Short, so messages held by a killed or paused worker come back within the run."""
RETRY_BUDGET_S = 4
SCHEDULE = RedeliverySchedule(first_delay_s=1, growth=2.0, cap_s=4, horizon_s=30)
"""The workers' redelivery schedule, shrunk like every other timeout here."""
OUTAGE_S = 2 * (RETRY_BUDGET_S + SCHEDULE.cap_s)
"""Long enough that a worker that kept receiving would burn several receives."""


@dataclass(frozen=True)
class Config:
    """How big a run is."""

    seed: int
    transfers: int = 600
    workers: int = 3
    accounts: int = 5
    rounds: int = 1
    """How many times each fault is injected."""
    drain_timeout_s: float = 240.0


@dataclass
class Report:
    """What a run did and found."""

    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    checks: list[Check] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every invariant held."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def format(self) -> str:
        """The table of faults injected and invariants checked."""
        lines = ["WORKLOAD"]
        lines += [f"  {n:>5}  {kind}" for kind, n in self.messages.most_common()]
        lines.append("FAULTS INJECTED")
        lines += [f"  {n:>5}  {fault}" for fault, n in sorted(self.faults.items())]
        lines.append("INVARIANTS")
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        verdict = "all invariants hold" if self.ok else "INVARIANTS VIOLATED"
        lines.append(f"{verdict} (seed {self.seed}; rerun: python -m faults --seed {self.seed})")
        if self.workdir is not None:
            lines.append(f"worker logs: {self.workdir}")
        return "\n".join(lines)


def run(config: Config, *, echo: Callable[[str], None] = print) -> Report:
    """One full run; never raises for an invariant violation (see ``Report.ok``)."""
    report = Report(config.seed)
    rng = random.Random(config.seed)
    workload = build(config.seed, config.transfers, config.accounts)
    report.messages = Counter(m.kind.value for m in workload.messages)
    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    report.workdir = workdir
    with EmbeddedPostgres() as pg, LocalSqs() as sqs:
        queues = sqs.create_queues(
            "faults",
            visibility_timeout_s=VISIBILITY_TIMEOUT_S,
            max_receive_count=SCHEDULE.max_receive_count,
        )
        settings = Settings(database_url=pg.url)
        with connect(settings) as conn:
            migrate(conn, settings.backend)
        reset_accounts(settings, config.accounts, Decimal(1000))
        cluster = WorkerFleet(_worker_env(pg, sqs, queues), workdir)
        for _ in range(config.workers):
            cluster.start()
        nemesis = Nemesis(cluster, pg, rng, report.faults, echo)
        sent: list[tuple[Message, str]] = []
        sender = threading.Thread(
            target=_send, args=(sqs, queues, workload, sent, nemesis.pace(len(workload.messages)))
        )
        echo(f"fault run: seed {config.seed}, {len(workload.messages)} messages, "
             f"{config.workers} workers, logs in {workdir}")  # fmt: skip
        sender.start()
        nemesis.run(config.rounds)
        sender.join()
        nemesis.keep_workers(config.workers)
        echo("load sent and faults done; waiting for the queue to drain")
        _wait_for_drain(sqs, queues, config.drain_timeout_s)
        cluster.stop_all()
        with psycopg.connect(pg.url) as conn:
            report.checks = check_results(conn, sent)
        dead = receive_all(sqs.client(), queues.dlq_url, visibility_timeout_s=300)
        report.checks += check_dead_letters([dict(m) for m in dead], sent)
        deaths = cluster.unexpected_deaths()
        report.checks.append(
            Check(
                "no worker died of an unhandled exception",
                not deaths,
                "; ".join(deaths) or f"{len(cluster.workers)} worker processes",
            )
        )
    return report


class Nemesis:
    """Injects faults, one at a time, in a seeded order."""

    def __init__(
        self,
        cluster: WorkerFleet,
        pg: EmbeddedPostgres,
        rng: random.Random,
        injected: Counter[str],
        echo: Callable[[str], None],
    ) -> None:
        self.cluster, self.pg, self.rng, self.injected, self.echo = cluster, pg, rng, injected, echo
        self.faults: dict[str, Callable[[], None]] = {
            "kill -9 a worker, start a replacement": self.kill,
            "restart PostgreSQL (fast)": lambda: self.pg.restart("fast", downtime_s=0.5),
            "restart PostgreSQL (immediate)": lambda: self.pg.restart("immediate", downtime_s=0.5),
            "pg_terminate_backend every worker connection": self.terminate_backends,
            "SIGSTOP a worker past the visibility timeout, SIGCONT": self.pause,
            "SIGTERM a worker (drain), start a replacement": self.sigterm,
            f"stop PostgreSQL for {OUTAGE_S} s (outage)": lambda: self.pg.restart(
                "fast", downtime_s=OUTAGE_S
            ),
        }
        self.gap_s = 1.5

    def pace(self, messages: int) -> float:
        """Messages per second that spread the load over the fault schedule."""
        expected_s = len(self.faults) * (self.gap_s + 2.5) + VISIBILITY_TIMEOUT_S
        return max(20.0, messages / expected_s)

    def run(self, rounds: int) -> None:
        """Every fault ``rounds`` times, shuffled, with a gap between faults."""
        schedule = [name for _ in range(rounds) for name in self.faults]
        self.rng.shuffle(schedule)
        for name in schedule:
            time.sleep(self.gap_s)
            self.echo(f"  fault: {name}")
            self.faults[name]()
            self.injected[name] += 1

    def keep_workers(self, count: int) -> None:
        """Top the cluster up to ``count`` running workers."""
        while len(self.cluster.running()) < count:
            self.cluster.start()

    def _victim(self) -> WorkerProcess:
        ready = self.cluster.ready()
        return self.rng.choice(ready) if ready else self.cluster.start()

    def kill(self) -> None:
        self._victim().kill()
        self.cluster.start()

    def sigterm(self) -> None:
        self._victim().terminate()
        self.cluster.start()

    def pause(self) -> None:
        self._victim().pause(VISIBILITY_TIMEOUT_S + 2)

    def terminate_backends(self) -> None:
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'dsql-transfers'"
            )


def _worker_env(pg: EmbeddedPostgres, sqs: LocalSqs, queues: Queues) -> dict[str, str]:
    return child_environment(
        pg.url,
        sqs,
        queues,
        receive_wait_s=1,
        drain_timeout_s=5,
        retry_budget_s=RETRY_BUDGET_S,
        **SCHEDULE.as_settings(),
        db_probe_interval_s=1,
        pool_timeout_s=2,
        connect_timeout_s=2,
        pool_min_size=1,
        pool_max_size=4,
        metrics_interval_s=5,
    )


def _send(
    sqs: LocalSqs,
    queues: Queues,
    workload: Workload,
    sent: list[tuple[Message, str]],
    rate_per_s: float,
) -> None:
    """Send in batches of 10 at ``rate_per_s``, recording each message's SQS id."""
    client = sqs.client()
    gate = BacklogGate(client, queues.queue_url, limit=100)
    never = threading.Event()
    started = time.monotonic()
    for start in range(0, len(workload.messages), 10):
        batch = workload.messages[start : start + 10]
        gate.wait(never)
        result = send_messages(
            client,
            queues.queue_url,
            [{"Id": str(i), "MessageBody": m.body} for i, m in enumerate(batch)],
        )
        if result.failed:
            raise RuntimeError(f"moto refused entries: {result.failed}")
        sent.extend((m, result.message_ids[str(i)]) for i, m in enumerate(batch))
        gate.sent(len(batch))
        ahead = started + (start + len(batch)) / rate_per_s - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def _wait_for_drain(sqs: LocalSqs, queues: Queues, timeout_s: float) -> None:
    """Until the queue is empty (visible and in flight), or ``timeout_s``."""
    client = sqs.client()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and queue_depth(client, queues.queue_url).total:
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m faults``: exit 0 when every invariant held, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--transfers", type=int, default=3000, help="contended transfers")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--accounts", type=int, default=5, help="accounts (few = contended)")
    parser.add_argument("--rounds", type=int, default=3, help="times each fault is injected")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    config = Config(seed, args.transfers, args.workers, args.accounts, args.rounds)
    report = run(config)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
