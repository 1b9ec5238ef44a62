"""What a configuration can ask of DSQL and of Fargate, checked before synth.

DSQL's connection quotas are per cluster: 10,000 open connections, and a token bucket
of 100 new connections per second with a burst of 1,000 (error 53300 / 53400 past
them). Every worker holds a pool, so a stack's demand is the number of pools that can
exist at once times their size, and the rate at which new pools appear.

The worst cases counted here:

- **Open connections.** During a rolling deployment (maximum healthy 200 %) the old
  and the new tasks overlap: up to twice ``maxTasks`` pools of ``POOL_MAX_SIZE``. The
  function holds one pool per execution environment, at most its reserved concurrency.
- **Burst.** A deployment starts up to ``maxTasks`` new tasks at once, and a full queue
  makes the SQS event source start its first five environments at once; each may fill
  its pool within seconds.
- **Sustained rate.** The event source then adds up to 300 environments a minute
  (5 a second), each filling its pool; and every open connection is replaced once per
  pool lifetime (POOL_MAX_LIFETIME_S, jittered 5 % shorter).

Connections the deploy-time migration opens (one, before any worker starts) and those
of people running ``producer`` or ``psql`` are not counted: leave headroom for them.
"""

from __future__ import annotations

from dataclasses import dataclass

DSQL_MAX_CONNECTIONS = 10_000
DSQL_CONNECTION_RATE_PER_S = 100
DSQL_CONNECTION_BURST = 1_000

DEPLOYMENT_MAX_HEALTHY_PERCENT = 200
"""The service's maximumPercent: new tasks start before old ones stop."""

LAMBDA_SQS_INITIAL_ENVIRONMENTS = 5
"""The SQS event source starts with five concurrent batches when messages arrive."""

LAMBDA_SQS_SCALE_UP_PER_S = 300 / 60
"""...and adds up to 300 concurrent invocations a minute while messages remain."""

LIFETIME_JITTER = 0.95
"""psycopg_pool retires a connection up to 5 % before max_lifetime."""

FARGATE_SIZES: dict[int, range] = {
    256: range(512, 2049, 512),  # 512, 1024, 2048 (1536 is not offered)
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}
"""Fargate's task sizes (Linux): CPU units -> the memory (MiB) it may be paired with."""


def fargate_size_problem(cpu: int, memory_mb: int) -> str | None:
    """Why Fargate would refuse ``cpu``/``memory_mb``, or None when it is a valid size."""
    if cpu not in FARGATE_SIZES:
        sizes = ", ".join(map(str, FARGATE_SIZES))
        return f"{cpu} CPU units is not a Fargate size (one of {sizes})"
    allowed = FARGATE_SIZES[cpu]
    if memory_mb not in allowed or (cpu == 256 and memory_mb == 1536):
        options = [m for m in allowed if not (cpu == 256 and m == 1536)]
        return (
            f"{cpu} CPU units take {options[0]}..{options[-1]} MiB in steps of "
            f"{allowed.step} (except 1536 at 256), not {memory_mb}"
        )
    return None


@dataclass(frozen=True)
class ConnectionBudget:
    """The database connections a stack's workers can hold and open, at worst."""

    task_pool: int
    """Connections one task can hold: POOL_MAX_SIZE x WORKER_PROCESSES (0 without Fargate)."""
    max_tasks: int
    lambda_pool: int
    """POOL_MAX_SIZE of one function environment (0 without Lambda)."""
    lambda_environments: int
    """The function's reserved concurrency: at most this many environments run at once."""
    pool_max_lifetime_s: float

    @property
    def open_connections(self) -> int:
        """Connections open at once: overlapping deployments plus every environment."""
        tasks = self.max_tasks * DEPLOYMENT_MAX_HEALTHY_PERCENT // 100
        return tasks * self.task_pool + self.lambda_environments * self.lambda_pool

    @property
    def burst(self) -> int:
        """New connections within a few seconds: a deployment's new tasks and the event
        source's first environments, all filling their pools."""
        first = min(LAMBDA_SQS_INITIAL_ENVIRONMENTS, self.lambda_environments)
        return self.max_tasks * self.task_pool + first * self.lambda_pool

    @property
    def rate_per_s(self) -> float:
        """New connections per second, sustained: the event source scaling up, plus
        every open connection replaced once per pool lifetime."""
        scale_up = LAMBDA_SQS_SCALE_UP_PER_S * self.lambda_pool if self.lambda_environments else 0
        churn = self.open_connections / (self.pool_max_lifetime_s * LIFETIME_JITTER)
        return scale_up + churn

    def problems(self) -> list[str]:
        """Each DSQL quota this budget exceeds, with the numbers that add up to it."""
        found = []
        if self.open_connections > DSQL_MAX_CONNECTIONS:
            found.append(
                f"up to {self.open_connections} open database connections (2 x maxTasks x "
                f"{self.task_pool} + reserved concurrency x {self.lambda_pool}) exceed "
                f"DSQL's {DSQL_MAX_CONNECTIONS}; lower maxTasks, maxConcurrency or poolMaxSize"
            )
        if self.burst > DSQL_CONNECTION_BURST:
            found.append(
                f"a deployment can open {self.burst} connections at once (maxTasks x "
                f"{self.task_pool} + {LAMBDA_SQS_INITIAL_ENVIRONMENTS} x {self.lambda_pool}), "
                f"over DSQL's burst of {DSQL_CONNECTION_BURST}; lower maxTasks or poolMaxSize"
            )
        if self.rate_per_s > DSQL_CONNECTION_RATE_PER_S:
            found.append(
                f"up to {self.rate_per_s:.0f} new connections per second (Lambda adds "
                f"{LAMBDA_SQS_SCALE_UP_PER_S:.0f} environments/s x {self.lambda_pool}) exceed "
                f"DSQL's {DSQL_CONNECTION_RATE_PER_S}/s; lower poolMaxSize or batchSize"
            )
        return found
