"""The deployment: an Aurora DSQL cluster, the transfer queue and its DLQ, and the worker
as an ECS Fargate service, an SQS-triggered Lambda, or both (context ``compute``).

Every knob is a CDK context parameter (``-c name=value`` or ``infra/cdk.json``), read
once into :class:`StackConfig`; the stack itself makes no account or region lookups,
so it synthesizes without AWS credentials, and without Docker (CDK only hashes the
image's build context at synth time; ``cdk deploy`` builds it).

IAM is least privilege: the worker roles may connect to this one cluster (as the
configured database role), consume this one queue and send to its DLQ; producers get
a managed policy that may only send to the queue.
"""

from __future__ import annotations

import difflib
import re
import zipfile
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from aws_cdk import (
    Aws,
    CfnOutput,
    Duration,
    RemovalPolicy,
    Stack,
    Tags,
)
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_dsql as dsql
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk.aws_lambda_event_sources import SqsEventSource
from constructs import Construct, Node

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Relative paths in the context (``lambdaZip``, ``imageDirectory``) start here."""

IMAGE_EXCLUDE = [
    ".git",
    ".venv",
    "build",
    "dist",
    "cdk.out",
    "infra/cdk.out",
    "node_modules",
    "**/__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
]
"""Kept out of the image's build context, so hashing it at synth stays fast."""

MIN_VISIBILITY_S = 60
"""Floor for the queue's visibility timeout (the container worker is told the same value
and extends a message's visibility by it while the transfer runs): one transfer may
retry for RETRY_BUDGET_S (15 s), so a redelivery never overtakes a live attempt."""

STOP_MARGIN_S = 5
"""stopTimeout minus DRAIN_TIMEOUT_S, at least: time to close the pool and flush metrics."""

LAMBDA_VISIBILITY_FACTOR = 6
"""AWS guidance: queue visibility timeout at least 6x the consuming function's timeout."""

QUEUE_RETENTION = Duration.days(4)
DLQ_RETENTION = Duration.days(14)
"""Longer than the queue's: a redriven message keeps its original enqueue time."""

HEALTH_COMMAND = ["CMD", "python", "-m", "worker", "health"]

LAMBDA_ABI = "cp312"
"""The python3.12 runtime's CPython ABI tag; abi3 and pure wheels run anywhere."""


class InvalidContext(ValueError):
    """A context parameter has a value the stack cannot deploy."""


class Compute(StrEnum):
    """What consumes the transfer queue."""

    FARGATE = "fargate"
    LAMBDA = "lambda"
    BOTH = "both"


class Architecture(StrEnum):
    """CPU architecture of the Lambda zip and the container image alike."""

    X86_64 = "x86_64"
    ARM64 = "arm64"


WHEEL_MACHINES = {Architecture.X86_64: "x86_64", Architecture.ARM64: "aarch64"}
"""Lambda architecture -> the machine in wheel platform tags (manylinux_2_17_aarch64)."""


@dataclass(frozen=True)
class StackConfig:
    """Every context parameter, with its default. The context key is the camelCase field
    name (``max_receive_count`` -> ``maxReceiveCount``); values given on the command line
    arrive as strings and are converted to the field's type."""

    compute: Compute = Compute.BOTH
    deletion_protection: bool = True
    dsql_user: str = "admin"
    max_receive_count: int = 5
    architecture: Architecture = Architecture.X86_64
    # --- Lambda ---
    lambda_zip: str = "build/lambda.zip"
    lambda_timeout_s: int = 30
    lambda_memory_mb: int = 512
    lambda_reserve_ms: int = 5000
    batch_size: int = 10
    max_batching_window_s: int = 1
    max_concurrency: int = 10
    # --- Fargate ---
    image_directory: str = "."
    task_cpu: int = 512
    task_memory_mb: int = 1024
    min_tasks: int = 1
    max_tasks: int = 10
    backlog_per_task: int = 1000
    drain_timeout_s: int = 25
    stop_timeout_s: int = 40
    nat_gateways: int = 0

    def __post_init__(self) -> None:
        problems = [
            *_check(
                bool(re.fullmatch(r"[a-z_][a-z0-9_]*", self.dsql_user)),
                f"dsqlUser {self.dsql_user!r} is not a plain lower-case role name",
            ),
            *_within("maxReceiveCount", self.max_receive_count, 1, 1000),
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
            # Scaling divides the backlog by the running tasks: with none it has no data.
            *_within("minTasks", self.min_tasks, 1, self.max_tasks),
            *_within("maxTasks", self.max_tasks, 1, 1000),
            *_within("backlogPerTask", self.backlog_per_task, 1, 10**6),
            *_within("drainTimeoutS", self.drain_timeout_s, 1, self.stop_timeout_s - STOP_MARGIN_S),
            *_within("stopTimeoutS", self.stop_timeout_s, 1 + STOP_MARGIN_S, 120),  # Fargate max
            *_within("natGateways", self.nat_gateways, 0, 2),
        ]
        if problems:
            raise InvalidContext("invalid context: " + "; ".join(problems))

    @classmethod
    def from_context(cls, node: Node) -> StackConfig:
        """The parameters found in ``node``'s context; defaults for the others.

        Raises :class:`InvalidContext` for a value of the wrong type or range, and for a
        key that looks like a misspelt parameter (which would otherwise be ignored).
        """
        types = get_type_hints(cls)
        keys = {_camel(field.name): field.name for field in fields(cls)}
        for key in node.get_all_context():
            if key not in keys and (near := difflib.get_close_matches(key, keys, 1, 0.8)):
                raise InvalidContext(
                    f"unknown context parameter {key!r}; did you mean {near[0]!r}?"
                )
        values: dict[str, Any] = {}
        for key, name in keys.items():
            raw = node.try_get_context(key)
            if raw is not None:
                values[name] = _convert(key, raw, types[name])
        return cls(**values)

    @property
    def runs_fargate(self) -> bool:
        """Deploy the ECS Fargate service."""
        return self.compute in (Compute.FARGATE, Compute.BOTH)

    @property
    def runs_lambda(self) -> bool:
        """Deploy the SQS-triggered function."""
        return self.compute in (Compute.LAMBDA, Compute.BOTH)

    @property
    def visibility_timeout_s(self) -> int:
        """The queue's visibility timeout: 6x the function timeout, at least 60 s.

        Computed from the function timeout even when only Fargate is deployed, so that
        switching ``compute`` never changes the queue.
        """
        return max(MIN_VISIBILITY_S, LAMBDA_VISIBILITY_FACTOR * self.lambda_timeout_s)

    @property
    def dsql_action(self) -> str:
        """The IAM action that signs tokens for ``dsql_user``."""
        return "dsql:DbConnectAdmin" if self.dsql_user == "admin" else "dsql:DbConnect"

    def path(self, value: str) -> Path:
        """A context path, relative to the repository root unless absolute."""
        return (REPO_ROOT / value).resolve()


def context_defaults() -> dict[str, Any]:
    """Every parameter's default, keyed by its context name (what ``cdk.json`` carries)."""
    defaults = StackConfig()
    return {
        _camel(field.name): _plain(getattr(defaults, field.name)) for field in fields(StackConfig)
    }


class TransferStack(Stack):
    """DSQL cluster, transfer queue + DLQ, producer policy, and the chosen compute."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="SQS -> Aurora DSQL money-transfer processor (dsql-transfers)",
            **kwargs,
        )
        self.config = config
        Tags.of(self).add("project", "dsql-transfers")

        self.cluster = dsql.CfnCluster(
            self, "Cluster", deletion_protection_enabled=config.deletion_protection
        )
        # A protected cluster would make `cdk destroy` fail half way; keep it instead.
        self.cluster.apply_removal_policy(
            RemovalPolicy.RETAIN if config.deletion_protection else RemovalPolicy.DESTROY
        )
        self.endpoint = self.cluster.attr_endpoint  # <identifier>.dsql.<region>.on.aws

        self.dlq = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "TransferQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=QUEUE_RETENTION,
            visibility_timeout=Duration.seconds(config.visibility_timeout_s),
            receive_message_wait_time=Duration.seconds(20),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=config.max_receive_count
            ),
        )

        self.producer_policy = iam.ManagedPolicy(
            self,
            "ProducerPolicy",
            description="Send transfer requests to the dsql-transfers queue, nothing else.",
            statements=[
                iam.PolicyStatement(
                    # GetQueueAttributes: `producer load` gates on the queue's depth.
                    actions=["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
                    resources=[self.queue.queue_arn],
                )
            ],
        )

        self.task_role: iam.IRole | None = None
        self.function: lambda_.Function | None = None
        if config.runs_fargate:
            self.task_role = self._fargate_worker()
        if config.runs_lambda:
            self.function = self._lambda_worker()
        self._outputs()

    # --- shared ---------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """What both workers are told: every key is a :class:`worker.settings.Settings` field."""
        return {
            "DSQL_ENDPOINT": self.endpoint,
            "DSQL_USER": self.config.dsql_user,
            "QUEUE_URL": self.queue.queue_url,
            "DLQ_URL": self.dlq.queue_url,
            "LOG_FORMAT": "json",
        }

    def _grant_worker(self, grantee: iam.IGrantable) -> None:
        """Connect to this cluster, consume this queue, dead-letter into its DLQ."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[self.config.dsql_action], resources=[self.cluster.attr_resource_arn]
            )
        )
        self.queue.grant_consume_messages(grantee)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.dlq.queue_arn])
        )

    # --- ECS Fargate ----------------------------------------------------------------

    def _fargate_worker(self) -> iam.IRole:
        config = self.config
        public = config.nat_gateways == 0
        # Without NAT gateways the tasks sit in public subnets with a public IP (and a
        # security group that admits nothing): SQS, DSQL, ECR and CloudWatch Logs are
        # public endpoints, and a NAT gateway per AZ would cost more than the workers.
        subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)]
        if not public:
            subnets.append(
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                )
            )
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=subnets,
        )
        # Container Insights publishes RunningTaskCount, the divisor of backlog per task.
        cluster = ecs.Cluster(
            self, "WorkerCluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )

        arm = config.architecture is Architecture.ARM64
        task = ecs.FargateTaskDefinition(
            self,
            "WorkerTask",
            cpu=config.task_cpu,
            memory_limit_mib=config.task_memory_mb,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64 if arm else ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        image = ecs.ContainerImage.from_asset(
            str(config.path(config.image_directory)),
            exclude=IMAGE_EXCLUDE,
            # Build for the task's architecture whatever machine runs `cdk deploy`.
            platform=ecr_assets.Platform.LINUX_ARM64 if arm else ecr_assets.Platform.LINUX_AMD64,
        )
        environment = {
            **self._environment(),
            "AWS_REGION": Aws.REGION,
            "DRAIN_TIMEOUT_S": str(config.drain_timeout_s),
            # The queue's own value, so the worker need not ask for it at start-up.
            "VISIBILITY_TIMEOUT_S": str(config.visibility_timeout_s),
        }
        task.add_container(
            "worker",
            image=image,  # ENTRYPOINT python -m worker, CMD run
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="worker",
                log_group=logs.LogGroup(self, "WorkerLogs", retention=logs.RetentionDays.ONE_MONTH),
            ),
            health_check=ecs.HealthCheck(
                command=HEALTH_COMMAND,
                interval=Duration.seconds(15),
                timeout=Duration.seconds(5),
                retries=3,
                start_period=Duration.seconds(30),
            ),
            # SIGTERM, then DRAIN_TIMEOUT_S for in-flight transfers, then SIGKILL.
            stop_timeout=Duration.seconds(config.stop_timeout_s),
        )
        self._grant_worker(task.task_role)

        service = ecs.FargateService(
            self,
            "WorkerService",
            cluster=cluster,
            task_definition=task,
            desired_count=config.min_tasks,
            assign_public_ip=public,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC if public else ec2.SubnetType.PRIVATE_WITH_EGRESS
            ),
            # Start replacements before stopping old tasks; roll back a failing image.
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        self._scale_on_backlog(cluster, service)
        CfnOutput(self, "WorkerClusterName", value=cluster.cluster_name)
        CfnOutput(self, "WorkerServiceName", value=service.service_name)
        CfnOutput(self, "TaskRoleArn", value=task.task_role.role_arn)
        return task.task_role

    def _scale_on_backlog(self, cluster: ecs.Cluster, service: ecs.FargateService) -> None:
        """Target tracking on backlog per task = visible messages / running tasks.

        The L2 TargetTrackingScalingPolicy takes a single metric only, so this is the L1
        policy with a metric-math CustomizedMetricSpecification. Target = acceptable
        latency x one task's throughput (e.g. 10 s x 100 transfers/s).
        """
        config = self.config
        target = appscaling.ScalableTarget(
            self,
            "WorkerScalableTarget",
            service_namespace=appscaling.ServiceNamespace.ECS,
            resource_id=f"service/{cluster.cluster_name}/{service.service_name}",
            scalable_dimension="ecs:service:DesiredCount",
            min_capacity=config.min_tasks,
            max_capacity=config.max_tasks,
            role=iam.Role.from_role_arn(
                self,
                "EcsScalingRole",
                self.format_arn(
                    service="iam",
                    region="",
                    resource="role/aws-service-role/ecs.application-autoscaling.amazonaws.com",
                    resource_name="AWSServiceRoleForApplicationAutoScaling_ECSService",
                ),
            ),
        )
        policy = appscaling.CfnScalingPolicy
        appscaling.CfnScalingPolicy(
            self,
            "BacklogPerTaskScaling",
            policy_name=f"{self.stack_name}-backlog-per-task",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.scalable_target_id,
            target_tracking_scaling_policy_configuration=policy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=float(config.backlog_per_task),
                scale_out_cooldown=60,
                scale_in_cooldown=120,
                customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        _metric_query(
                            "visible",
                            "AWS/SQS",
                            "ApproximateNumberOfMessagesVisible",
                            {"QueueName": self.queue.queue_name},
                            "Sum",
                        ),
                        _metric_query(
                            "tasks",
                            "ECS/ContainerInsights",
                            "RunningTaskCount",
                            {
                                "ClusterName": cluster.cluster_name,
                                "ServiceName": service.service_name,
                            },
                            "Average",
                        ),
                        policy.TargetTrackingMetricDataQueryProperty(
                            id="backlog_per_task",
                            expression="visible / tasks",
                            label="Transfer messages visible per running task",
                            return_data=True,
                        ),
                    ]
                ),
            ),
        )

    # --- Lambda ---------------------------------------------------------------------

    def _lambda_worker(self) -> lambda_.Function:
        config = self.config
        zip_path = config.path(config.lambda_zip)
        check_lambda_zip(zip_path, config.architecture)
        function = lambda_.Function(
            self,
            "Function",
            description="dsql-transfers worker: SQS batch -> DSQL transfers",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="worker.lambda_handler.handler",
            code=lambda_.Code.from_asset(str(zip_path)),
            architecture=(
                lambda_.Architecture.ARM_64
                if config.architecture is Architecture.ARM64
                else lambda_.Architecture.X86_64
            ),
            timeout=Duration.seconds(config.lambda_timeout_s),
            memory_size=config.lambda_memory_mb,
            # AWS_REGION is reserved: the Lambda runtime sets it.
            environment={
                **self._environment(),
                "LAMBDA_RESERVE_MS": str(config.lambda_reserve_ms),
            },
            log_group=logs.LogGroup(self, "FunctionLogs", retention=logs.RetentionDays.ONE_MONTH),
        )
        self._grant_worker(function)
        function.add_event_source(
            SqsEventSource(
                self.queue,
                batch_size=config.batch_size,
                max_batching_window=Duration.seconds(config.max_batching_window_s),
                report_batch_item_failures=True,
                max_concurrency=config.max_concurrency,
            )
        )
        if function.role is not None:
            CfnOutput(self, "FunctionRoleArn", value=function.role.role_arn)
        CfnOutput(self, "FunctionName", value=function.function_name)
        return function

    # --- outputs --------------------------------------------------------------------

    def _outputs(self) -> None:
        CfnOutput(self, "ClusterIdentifier", value=self.cluster.attr_identifier)
        CfnOutput(self, "ClusterEndpoint", value=self.endpoint)
        CfnOutput(self, "ClusterArn", value=self.cluster.attr_resource_arn)
        CfnOutput(self, "Region", value=Aws.REGION)
        CfnOutput(self, "QueueUrl", value=self.queue.queue_url)
        CfnOutput(self, "DlqUrl", value=self.dlq.queue_url)
        CfnOutput(self, "ProducerPolicyArn", value=self.producer_policy.managed_policy_arn)


def check_lambda_zip(path: Path, architecture: Architecture) -> None:
    """Refuse a missing zip, or one whose binary wheels cannot run on the function.

    psycopg's and pydantic-core's wheels are native: a zip built for the other
    architecture or another CPython deploys fine and fails on its first import.
    """
    if not path.is_file():
        raise InvalidContext(
            f"lambdaZip: {path} does not exist; run `make lambda-zip`, pass "
            "-c lambdaZip=<path>, or deploy with -c compute=fargate"
        )
    machine = WHEEL_MACHINES[architecture]
    with zipfile.ZipFile(path) as archive:
        tags = [
            line.split()[-1]
            for name in archive.namelist()
            if name.endswith(".dist-info/WHEEL")
            for line in archive.read(name).decode().splitlines()
            if line.startswith("Tag:")
        ]
    wrong = sorted({tag for tag in tags if not _runs_on(tag, machine)})
    if wrong:
        raise InvalidContext(
            f"lambdaZip: {path} holds {len(wrong)} wheel tag(s) such as {wrong[0]} that do "
            f"not run on {LAMBDA_ABI} {architecture}; rebuild it with "
            f"`python -m sandbox.lambda_zip --arch {architecture}`"
        )


# --- helpers --------------------------------------------------------------------------


def _metric_query(
    query_id: str, namespace: str, name: str, dimensions: dict[str, str], stat: str
) -> appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty:
    policy = appscaling.CfnScalingPolicy
    return policy.TargetTrackingMetricDataQueryProperty(
        id=query_id,
        return_data=False,
        metric_stat=policy.TargetTrackingMetricStatProperty(
            stat=stat,
            metric=policy.TargetTrackingMetricProperty(
                namespace=namespace,
                metric_name=name,
                dimensions=[
                    policy.TargetTrackingMetricDimensionProperty(name=key, value=value)
                    for key, value in dimensions.items()
                ],
            ),
        ),
    )


def _runs_on(tag: str, machine: str) -> bool:
    """Whether a wheel tag (``cp312-cp312-manylinux_2_17_x86_64``) suits the runtime."""
    _python, abi, platform = tag.split("-")
    if abi.startswith("cp") and abi != LAMBDA_ABI:
        return False
    return not any(platform.endswith(f"_{m}") for m in WHEEL_MACHINES.values() if m != machine)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value


def _convert(key: str, raw: Any, kind: Any) -> Any:
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
        elif isinstance(kind, type) and issubclass(kind, StrEnum):
            return kind(str(raw))
        elif kind is str and isinstance(raw, str):
            return raw
    except ValueError:
        pass
    choices = ""
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        choices = f" (one of {', '.join(kind)})"
    raise InvalidContext(f"context {key}={raw!r} is not a valid {kind.__name__}{choices}")


def _within(key: str, value: int, low: int, high: int) -> list[str]:
    return [] if low <= value <= high else [f"{key}={value} must be within {low}..{high}"]


def _check(ok: bool, problem: str) -> list[str]:
    return [] if ok else [problem]
