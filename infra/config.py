"""Every context parameter of the stack, read once into :class:`StackConfig` and checked
before anything is synthesized.

A parameter is a CDK context key (``-c name=value`` or ``infra/cdk.json``): the
camelCase form of a field name. Values from the command line arrive as strings and are
converted to the field's type. A configuration the stack cannot run safely (a Fargate
size AWS does not offer, more database connections than DSQL allows, a redelivery
horizon SQS cannot express) is refused here with :class:`InvalidContext`, so ``cdk
synth`` fails instead of ``cdk deploy`` or, worse, production.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from constructs import Node

from infra.capacity import ConnectionBudget, fargate_size_problem
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Relative paths in the context (``lambdaZip``, ``imageDirectory``) start here."""

MIN_VISIBILITY_S = 60
"""Floor for the queue's visibility timeout (the container worker is told the same value
and extends a message's visibility by it while the transfer runs): one transfer may
retry for RETRY_BUDGET_S (15 s), so a redelivery never overtakes a live attempt."""

STOP_MARGIN_S = 5
"""stopTimeout minus DRAIN_TIMEOUT_S, at least: time to close the pool and flush metrics."""

LAMBDA_VISIBILITY_FACTOR = 6
"""AWS guidance: queue visibility timeout at least 6x the consuming function's timeout."""

ROLE_NAME = r"[a-z_][a-z0-9_]{0,62}"
"""A plain PostgreSQL identifier: what Settings accepts for DB_SCHEMA and the roles."""

ENVIRONMENT_NAME = r"[a-z][a-z0-9-]{0,19}"
"""Short enough for resource names; lower case so it reads the same in every service."""

STACK_NAME = r"[A-Za-z][A-Za-z0-9-]{0,127}"
EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+"


REPLACED = {
    "maxReceiveCount": "it is computed from the redelivery schedule (redeliveryHorizonS, "
    "retryVisibilityS, retryVisibilityGrowth, retryVisibilityMaxS)",
    "architecture": "set lambdaArchitecture and taskArchitecture",
    "dsqlUser": "workers connect as dbWorkerRole; only the migration uses admin",
}
"""Parameters of earlier versions, refused with what replaced them (instead of ignored)."""


def _setting(name: str) -> Any:
    """The default of a Settings field: the worker's defaults are the stack's."""
    return Settings.model_fields[name].default


class InvalidContext(ValueError):
    """A context parameter has a value the stack cannot deploy."""


class Compute(StrEnum):
    """What consumes the transfer queue."""

    FARGATE = "fargate"
    LAMBDA = "lambda"
    BOTH = "both"


class Architecture(StrEnum):
    """CPU architecture of the Lambda zip or the container image."""

    X86_64 = "x86_64"
    ARM64 = "arm64"


class Subnets(StrEnum):
    """Where the Fargate tasks run."""

    PRIVATE = "private"
    """No public IP; AWS APIs through VPC endpoints, DSQL through NAT or PrivateLink."""
    PUBLIC = "public"
    """A public IP per task and no endpoints: the cheap demo deployment."""


@dataclass(frozen=True)
class StackConfig:
    """Every context parameter, with its default."""

    # --- naming and data protection ---
    environment: str = "prod"
    stack_name: str = ""  # "": DsqlTransfers-<environment>
    tags: dict[str, str] = field(default_factory=dict)
    compute: Compute = Compute.FARGATE
    deletion_protection: bool = True
    # --- database roles (created by the deploy-time migration) ---
    db_schema: str = _setting("db_schema")
    db_worker_role: str = _setting("db_worker_role")
    db_reader_role: str = _setting("db_reader_role")
    reader_role_arns: tuple[str, ...] = ()
    pool_min_size: int = _setting("pool_min_size")
    pool_max_size: int = _setting("pool_max_size")
    # --- redelivery (worker.redelivery): the queue's maxReceiveCount follows ---
    retry_visibility_s: int = _setting("retry_visibility_s")
    retry_visibility_growth: float = _setting("retry_visibility_growth")
    retry_visibility_max_s: int = _setting("retry_visibility_max_s")
    redelivery_horizon_s: int = _setting("redelivery_horizon_s")
    # --- alarms ---
    alarm_email: str = ""
    max_message_age_s: int = 900
    failed_threshold: int = 0
    malformed_threshold: int = 0
    transaction_p99_ms: int = 250
    holding_back_minutes: int = 3
    # --- Lambda ---
    lambda_architecture: Architecture = Architecture.ARM64
    lambda_zip: str = "build/lambda.zip"
    lambda_timeout_s: int = 30
    lambda_memory_mb: int = 512
    lambda_reserve_ms: int = 5000
    batch_size: int = 10
    max_batching_window_s: int = 1
    max_concurrency: int = 10
    reserved_concurrency: int = 0  # 0: maxConcurrency
    # --- Fargate ---
    task_architecture: Architecture = Architecture.X86_64
    image_directory: str = "."
    task_cpu: int = 512
    task_memory_mb: int = 1024
    min_tasks: int = 1
    max_tasks: int = 10
    backlog_per_task: int = 1000
    drain_timeout_s: int = 25
    stop_timeout_s: int = 40
    fargate_spot: bool = False
    # --- network (Fargate) ---
    subnets: Subnets = Subnets.PRIVATE
    nat_gateways: int = 1
    dsql_private_link: bool = False

    def __post_init__(self) -> None:
        problems = [
            *_check(
                bool(re.fullmatch(ENVIRONMENT_NAME, self.environment)),
                f"environment {self.environment!r} must match {ENVIRONMENT_NAME}",
            ),
            *_check(
                not self.stack_name or bool(re.fullmatch(STACK_NAME, self.stack_name)),
                f"stackName {self.stack_name!r} is not a CloudFormation stack name",
            ),
            *[
                f"{key} {value!r} is not a plain lower-case identifier"
                for key, value in (
                    ("dbSchema", self.db_schema),
                    ("dbWorkerRole", self.db_worker_role),
                    ("dbReaderRole", self.db_reader_role),
                )
                if not re.fullmatch(ROLE_NAME, value)
            ],
            *_check(
                self.db_worker_role != self.db_reader_role
                and "admin" not in (self.db_worker_role, self.db_reader_role),
                "dbWorkerRole and dbReaderRole must be two roles other than admin",
            ),
            *[
                f"readerRoleArns: {arn!r} is not an IAM role ARN"
                for arn in self.reader_role_arns
                if not re.fullmatch(ROLE_ARN, arn)
            ],
            *_check(
                not self.alarm_email or bool(re.fullmatch(EMAIL, self.alarm_email)),
                f"alarmEmail {self.alarm_email!r} is not an e-mail address",
            ),
            *_within("poolMaxSize", self.pool_max_size, 1, 100),
            *_within("poolMinSize", self.pool_min_size, 0, self.pool_max_size),
            *_within("maxMessageAgeS", self.max_message_age_s, 60, 14 * 86400),
            *_within("failedThreshold", self.failed_threshold, 0, 10**6),
            *_within("malformedThreshold", self.malformed_threshold, 0, 10**6),
            *_within("transactionP99Ms", self.transaction_p99_ms, 1, 300_000),
            *_within("holdingBackMinutes", self.holding_back_minutes, 1, 60),
            *_within("lambdaTimeoutS", self.lambda_timeout_s, 1, 900),
            *_within("lambdaMemoryMb", self.lambda_memory_mb, 128, 10240),
            *_within(
                "lambdaReserveMs", self.lambda_reserve_ms, 0, self.lambda_timeout_s * 1000 - 1
            ),
            *_within("batchSize", self.batch_size, 1, 10000),
            *_within("maxBatchingWindowS", self.max_batching_window_s, 0, 300),
            *_check(
                self.batch_size <= 10 or self.max_batching_window_s >= 1,
                "batchSize above 10 needs maxBatchingWindowS >= 1",
            ),
            *_within("maxConcurrency", self.max_concurrency, 2, 1000),
            # Below the ESM's maximum, Lambda throttles the poller's invocations and the
            # messages come back as receives that count towards maxReceiveCount.
            *_check(
                self.reserved_concurrency in (0, *range(self.max_concurrency, 1001)),
                f"reservedConcurrency={self.reserved_concurrency} must be 0 (= maxConcurrency) "
                f"or within {self.max_concurrency}..1000 (at least maxConcurrency)",
            ),
            # Scaling divides the backlog by the running tasks: with none it has no data.
            *_within("minTasks", self.min_tasks, 1, self.max_tasks),
            *_within("maxTasks", self.max_tasks, 1, 1000),
            *_within("backlogPerTask", self.backlog_per_task, 1, 10**6),
            *_within("drainTimeoutS", self.drain_timeout_s, 1, self.stop_timeout_s - STOP_MARGIN_S),
            *_within("stopTimeoutS", self.stop_timeout_s, 1 + STOP_MARGIN_S, 120),  # Fargate max
            *_check(
                (problem := fargate_size_problem(self.task_cpu, self.task_memory_mb)) is None,
                f"taskCpu/taskMemoryMb: {problem}",
            ),
            *_check(
                not (self.fargate_spot and self.task_architecture is Architecture.ARM64),
                "fargateSpot: Fargate Spot runs x86_64 tasks only; use taskArchitecture=x86_64",
            ),
            *self._network_problems(),
            *self._redelivery_problems(),
        ]
        if not problems:  # the budget needs sane numbers to mean anything
            problems = self.connections.problems()
        if problems:
            raise InvalidContext("invalid context: " + "; ".join(problems))

    def _network_problems(self) -> list[str]:
        if self.subnets is Subnets.PUBLIC:
            return [
                *_check(self.nat_gateways == 0, "natGateways must be 0 with subnets=public"),
                *_check(
                    not self.dsql_private_link,
                    "dsqlPrivateLink needs subnets=private (a VPC endpoint is private)",
                ),
            ]
        return [
            *_within("natGateways", self.nat_gateways, 0, 3),
            # Without NAT, the tasks' only way to DSQL is its PrivateLink endpoint.
            *_check(
                self.nat_gateways > 0 or self.dsql_private_link,
                "subnets=private with natGateways=0 cannot reach DSQL: set dsqlPrivateLink=true "
                "or natGateways >= 1",
            ),
        ]

    def _redelivery_problems(self) -> list[str]:
        try:
            _receives = self.schedule.max_receive_count
        except ValueError as exc:  # RedeliverySchedule's own checks, ScheduleTooLong
            return [f"redelivery schedule (retryVisibility*, redeliveryHorizonS): {exc}"]
        return []

    @classmethod
    def from_context(cls, node: Node) -> StackConfig:
        """The parameters found in ``node``'s context; defaults for the others.

        Raises :class:`InvalidContext` for a value of the wrong type or range, and for a
        key that looks like a misspelt parameter (which would otherwise be ignored).
        """
        types = get_type_hints(cls)
        keys = {_camel(f.name): f.name for f in fields(cls)}
        for key in node.get_all_context():
            # Ours are camelCase words; CDK's own keys are not (aws:cdk:..., @aws-cdk/...
            # feature flags, the CLI's acknowledged-issue-numbers).
            if key in keys or not re.fullmatch(r"[a-z][A-Za-z0-9]*", key):
                continue
            if key in REPLACED:
                raise InvalidContext(f"context parameter {key!r} is gone: {REPLACED[key]}")
            near = difflib.get_close_matches(key, keys, 1, 0.8)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise InvalidContext(f"unknown context parameter {key!r}{hint}")
        values: dict[str, Any] = {}
        for key, name in keys.items():
            raw = node.try_get_context(key)
            if raw is not None:
                values[name] = _convert(key, raw, types[name])
        return cls(**values)

    # --- derived values ------------------------------------------------------------

    @property
    def resolved_stack_name(self) -> str:
        """The CloudFormation stack name: ``stackName``, or one per environment."""
        return self.stack_name or f"DsqlTransfers-{self.environment}"

    @property
    def metrics_namespace(self) -> str:
        """METRICS_NAMESPACE for this stack's workers: one per environment, so that the
        alarms of staging and production in one account never see each other's data."""
        return f"{_setting('metrics_namespace')}/{self.environment}"

    @property
    def runs_fargate(self) -> bool:
        """Deploy the ECS Fargate service."""
        return self.compute in (Compute.FARGATE, Compute.BOTH)

    @property
    def runs_lambda(self) -> bool:
        """Deploy the SQS-triggered function."""
        return self.compute in (Compute.LAMBDA, Compute.BOTH)

    @property
    def schedule(self) -> RedeliverySchedule:
        """The redelivery schedule the workers follow and the queue must cover."""
        return RedeliverySchedule(
            first_delay_s=self.retry_visibility_s,
            growth=self.retry_visibility_growth,
            cap_s=self.retry_visibility_max_s,
            horizon_s=self.redelivery_horizon_s,
        )

    @property
    def visibility_timeout_s(self) -> int:
        """The queue's visibility timeout: 6x the function timeout, at least 60 s.

        Computed from the function timeout even when only Fargate is deployed, so that
        switching ``compute`` never changes the queue.
        """
        return max(MIN_VISIBILITY_S, LAMBDA_VISIBILITY_FACTOR * self.lambda_timeout_s)

    @property
    def function_concurrency(self) -> int:
        """The function's reserved concurrency: at least the event source's maximum."""
        return self.reserved_concurrency or self.max_concurrency

    @property
    def lambda_pool_max_size(self) -> int:
        """POOL_MAX_SIZE for the function: an environment runs at most one batch, so a
        pool larger than the batch only holds idle connections DSQL still counts."""
        return min(self.pool_max_size, self.batch_size)

    @property
    def lambda_pool_min_size(self) -> int:
        """POOL_MIN_SIZE for the function, within its smaller maximum."""
        return min(self.pool_min_size, self.lambda_pool_max_size)

    @property
    def worker_processes(self) -> int:
        """WORKER_PROCESSES for the task: one consumer process per vCPU (1,024 CPU
        units), since one Python process tops out near one core."""
        return max(1, self.task_cpu // 1024)

    @property
    def connections(self) -> ConnectionBudget:
        """What this configuration's workers can ask of DSQL, at worst."""
        return ConnectionBudget(
            task_pool=self.pool_max_size * self.worker_processes if self.runs_fargate else 0,
            max_tasks=self.max_tasks if self.runs_fargate else 0,
            lambda_pool=self.lambda_pool_max_size if self.runs_lambda else 0,
            lambda_environments=self.function_concurrency if self.runs_lambda else 0,
            pool_max_lifetime_s=_setting("pool_max_lifetime_s"),
        )

    def path(self, value: str) -> Path:
        """A context path, relative to the repository root unless absolute."""
        return (REPO_ROOT / value).resolve()


def context_defaults() -> dict[str, Any]:
    """Every parameter's default, keyed by its context name (what ``cdk.json`` carries)."""
    defaults = StackConfig()
    return {_camel(f.name): _plain(getattr(defaults, f.name)) for f in fields(StackConfig)}


# --- helpers --------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _convert(key: str, raw: Any, kind: Any) -> Any:  # noqa: PLR0912 - one branch per type
    """``raw`` (typed in cdk.json, a string from ``-c key=value``) as a ``kind``."""
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false"):
                return str(raw).lower() == "true"
        elif kind is int:
            if not isinstance(raw, bool) and isinstance(raw, int | str):
                return int(raw)
        elif kind is float:
            if not isinstance(raw, bool) and isinstance(raw, int | float | str):
                return float(raw)
        elif isinstance(kind, type) and issubclass(kind, StrEnum):
            return kind(str(raw))
        elif kind is str and isinstance(raw, str):
            return raw
        elif kind == tuple[str, ...]:
            # A JSON list in cdk.json, a comma-separated string from the command line.
            items = raw.split(",") if isinstance(raw, str) else raw
            if isinstance(items, list) and all(isinstance(item, str) for item in items):
                return tuple(item.strip() for item in items if item.strip())
        elif kind == dict[str, str]:
            # A JSON object in cdk.json, "name=value,name=value" from the command line.
            pairs = (
                dict(item.split("=", 1) for item in raw.split(",") if item.strip())
                if isinstance(raw, str)
                else raw
            )
            if isinstance(pairs, dict) and all(
                isinstance(k, str) and isinstance(v, str) and k.strip() for k, v in pairs.items()
            ):
                return {k.strip(): v.strip() for k, v in pairs.items()}
    except ValueError:
        pass
    name = getattr(kind, "__name__", str(kind))
    choices = ""
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        choices = f" (one of {', '.join(kind)})"
    raise InvalidContext(f"context {key}={raw!r} is not a valid {name}{choices}")


def _within(key: str, value: int, low: int, high: int) -> list[str]:
    return [] if low <= value <= high else [f"{key}={value} must be within {low}..{high}"]


def _check(ok: bool, problem: str) -> list[str]:
    return [] if ok else [problem]
