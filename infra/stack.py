"""The deployment: an Aurora DSQL cluster, the transfer queue and its DLQ, the schema
migrated at deploy time, the worker as an ECS Fargate service or an SQS-triggered Lambda
(context ``compute``), and the alarms and dashboard that watch them.

Every knob is a context parameter read into :class:`~infra.config.StackConfig`; the stack
makes no account or region lookups, so it synthesizes without AWS credentials, and
without Docker (CDK only hashes the image's build context; ``cdk deploy`` builds it).

Least privilege: a custom resource runs ``worker.ops.migrate_handler.on_event`` as the DSQL
``admin`` role (the only holder of ``dsql:DbConnectAdmin``); it creates the schema and
the worker and reader database roles, and maps the worker role to the task and
function IAM roles. The workers then connect as that role with ``dsql:DbConnect`` only,
consume this one queue, send to its DLQ, and write their own log group.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

from aws_cdk import (
    Aws,
    CfnOutput,
    CustomResource,
    Duration,
    RemovalPolicy,
    Stack,
    Tags,
    custom_resources,
)
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_dsql as dsql
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk.aws_lambda_event_sources import SqsEventSource
from constructs import Construct, IConstruct

from infra import findings
from infra.config import (
    Architecture,
    InvalidContext,
    StackConfig,
)
from infra.monitoring import CONTAINER, FUNCTION, Consumer, Monitoring
from infra.network import WorkerNetwork

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

QUEUE_RETENTION = Duration.days(4)
DLQ_RETENTION = Duration.days(14)
"""Longer than the queue's: a redriven message keeps its original enqueue time."""

HEALTH_COMMAND = ["CMD", "python", "-m", "worker", "health"]
"""Liveness only: a worker holding back for an unreachable database must not be killed
(``health --ready`` would fail then)."""

WORKER_HANDLER = "worker.lambda_handler.handler"
MIGRATE_HANDLER = "worker.ops.migrate_handler.on_event"
MIGRATE_TIMEOUT = Duration.minutes(15)
"""Lambda's maximum: ``CREATE INDEX ASYNC`` jobs on a populated table take a while."""

LAMBDA_ABI = "cp312"
"""The python3.12 runtime's CPython ABI tag; abi3 and pure wheels run anywhere."""

WHEEL_MACHINES = {Architecture.X86_64: "x86_64", Architecture.ARM64: "aarch64"}
"""Lambda architecture -> the machine in wheel platform tags (manylinux_2_17_aarch64)."""

PYTHON_RUNTIME_REASON = "the zip is built and tested for python3.12 (cp312 wheels, bytecode)"
NO_SECRETS_REASON = "endpoints, queue URLs and knobs only: no secret (DSQL uses IAM tokens)"
CDK_ROLE_DEPENDENCY = "CDK adds an explicit DependsOn on the role a GetAtt already implies"


class TransferStack(Stack):
    """DSQL cluster, transfer queue + DLQ, deploy-time migration, the chosen compute,
    alarms and dashboard."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="SQS -> Aurora DSQL money-transfer processor (dsql-transfers)",
            # A protected stack is also safe from a stray `cdk destroy`.
            termination_protection=config.deletion_protection,
            **kwargs,
        )
        self.config = config
        Tags.of(self).add("project", "dsql-transfers")
        Tags.of(self).add("environment", config.environment)
        for key, value in config.tags.items():
            Tags.of(self).add(key, value)
        # Protected data survives `cdk destroy` and resource replacement; unprotected
        # demo stacks clean up after themselves.
        self.removal_policy = (
            RemovalPolicy.RETAIN if config.deletion_protection else RemovalPolicy.DESTROY
        )

        self.cluster = dsql.CfnCluster(
            self, "Cluster", deletion_protection_enabled=config.deletion_protection
        )
        self.cluster.apply_removal_policy(self.removal_policy)
        self.endpoint = self.cluster.attr_endpoint  # <identifier>.dsql.<region>.on.aws
        self._queues()
        self._client_policies()
        self.monitoring = Monitoring(self, "Monitoring", config=config)
        self.monitoring.queue_alarms(self.queue, self.dlq)

        self.task_role: iam.IRole | None = None
        self.function: lambda_.Function | None = None
        self.service: ecs.FargateService | None = None
        self.ecs_cluster: ecs.Cluster | None = None
        worker_roles: list[iam.IRole] = []
        if config.runs_fargate:
            self.task_role = self._fargate_worker()
            worker_roles.append(self.task_role)
        if config.runs_lambda:
            self.function = self._lambda_worker()
            if self.function.role is not None:
                worker_roles.append(self.function.role)
        self.migration = self._migration(worker_roles)
        # No worker starts before its tables exist and its database role is mapped.
        for consumer in (self.service, self.function):
            if consumer is not None:
                consumer.node.add_dependency(self.migration)
        consumers: list[Consumer] = [
            c for c, on in ((CONTAINER, config.runs_fargate), (FUNCTION, config.runs_lambda)) if on
        ]
        self.monitoring.build_dashboard(
            queue=self.queue,
            dlq=self.dlq,
            consumers=consumers,
            service=self.service,
            cluster=self.ecs_cluster,
            function=self.function,
        )
        self._outputs()

    # --- queues and client policies ---------------------------------------------------

    def _queues(self) -> None:
        config = self.config
        self.dlq = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
            removal_policy=self.removal_policy,
        )
        self.queue = sqs.Queue(
            self,
            "TransferQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=QUEUE_RETENTION,
            visibility_timeout=Duration.seconds(config.visibility_timeout_s),
            receive_message_wait_time=Duration.seconds(20),
            # The receives the workers' redelivery schedule needs to cover its horizon:
            # one rule (worker.redelivery) for the queue and the workers.
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=config.schedule.max_receive_count
            ),
            removal_policy=self.removal_policy,
        )
        for queue in (self.queue, self.dlq):
            findings.checkov(queue, "CKV_AWS_27", "SSE-SQS (SQS-managed keys) encrypts at rest")

    def _client_policies(self) -> None:
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
        self.reader_policy = iam.ManagedPolicy(
            self,
            "ReaderPolicy",
            description="Connect to the dsql-transfers cluster as a non-admin role (the "
            "reader role, for roles listed in readerRoleArns).",
            statements=[
                iam.PolicyStatement(
                    actions=["dsql:DbConnect"], resources=[self.cluster.attr_resource_arn]
                )
            ],
        )

    # --- shared -----------------------------------------------------------------------

    def _environment(self, pool_min: int, pool_max: int) -> dict[str, str]:
        """What both workers are told: every key is a :class:`worker.settings.Settings`
        field. The redelivery knobs are the ones the queue's maxReceiveCount was
        computed from, so worker and queue agree on the horizon."""
        config = self.config
        return {
            "DSQL_ENDPOINT": self.endpoint,
            "DSQL_USER": config.db_worker_role,
            "DB_SCHEMA": config.db_schema,
            "QUEUE_URL": self.queue.queue_url,
            "DLQ_URL": self.dlq.queue_url,
            "LOG_FORMAT": "json",
            "METRICS_NAMESPACE": config.metrics_namespace,
            "POOL_MIN_SIZE": str(pool_min),
            "POOL_MAX_SIZE": str(pool_max),
            "RETRY_VISIBILITY_S": str(config.retry_visibility_s),
            "RETRY_VISIBILITY_GROWTH": str(config.retry_visibility_growth),
            "RETRY_VISIBILITY_MAX_S": str(config.retry_visibility_max_s),
            "REDELIVERY_HORIZON_S": str(config.redelivery_horizon_s),
        }

    def _grant_worker(self, grantee: iam.IGrantable) -> None:
        """Connect to this cluster as a non-admin role, consume this queue, dead-letter
        into its DLQ."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dsql:DbConnect"], resources=[self.cluster.attr_resource_arn]
            )
        )
        self.queue.grant_consume_messages(grantee)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.dlq.queue_arn])
        )

    def _log_group(self, construct_id: str) -> logs.LogGroup:
        group = logs.LogGroup(
            self,
            construct_id,
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=self.removal_policy,
        )
        findings.log_group(group)
        return group

    def _function_role(self, construct_id: str, log_group: logs.ILogGroup) -> iam.Role:
        """A function role that may write its own log group and nothing else yet
        (instead of AWSLambdaBasicExecutionRole, which allows every log group)."""
        role = iam.Role(self, construct_id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        return role

    def _function(
        self,
        construct_id: str,
        *,
        handler: str,
        role: iam.IRole,
        log_group: logs.ILogGroup,
        timeout: Duration,
        memory_mb: int,
        concurrency: int,
        environment: dict[str, str],
        description: str,
    ) -> lambda_.Function:
        """A python3.12 function from the Lambda zip (the worker and the migration share
        it). AWS_REGION is not in ``environment``: the runtime sets it."""
        config = self.config
        zip_path = config.path(config.lambda_zip)
        check_lambda_zip(zip_path, config.lambda_architecture)
        function = lambda_.Function(
            self,
            construct_id,
            description=description,
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler=handler,
            code=lambda_.Code.from_asset(str(zip_path)),
            architecture=(
                lambda_.Architecture.ARM_64
                if config.lambda_architecture is Architecture.ARM64
                else lambda_.Architecture.X86_64
            ),
            timeout=timeout,
            memory_size=memory_mb,
            reserved_concurrent_executions=concurrency,
            environment=environment,
            role=role,
            log_group=log_group,
        )
        findings.nag(function, "AwsSolutions-L1", PYTHON_RUNTIME_REASON)
        findings.checkov(
            function,
            "CKV_AWS_116",
            "SQS-triggered and custom-resource functions are invoked synchronously; "
            "a Lambda DLQ is for asynchronous invocations (the queue has its own)",
        )
        findings.checkov(
            function,
            "CKV_AWS_117",
            "reaches SQS and DSQL over IAM-authenticated TLS; a VPC would add NAT or "
            "endpoints and cold-start ENIs for no gain",
        )
        findings.checkov(function, "CKV_AWS_173", NO_SECRETS_REASON)
        findings.cfn_lint(function, "W3005", CDK_ROLE_DEPENDENCY)
        return function

    # --- deploy-time migration --------------------------------------------------------

    def _migration(self, worker_roles: list[iam.IRole]) -> CustomResource:
        """``python -m worker migrate`` as a custom resource: on every deploy that changes
        the code, the roles or the mapped IAM roles, before any worker starts."""
        config = self.config
        log_group = self._log_group("MigrationLogs")
        role = self._function_role("MigrationRole", log_group)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dsql:DbConnectAdmin"], resources=[self.cluster.attr_resource_arn]
            )
        )
        function = self._function(
            "MigrationFunction",
            handler=MIGRATE_HANDLER,
            role=role,
            log_group=log_group,
            timeout=MIGRATE_TIMEOUT,
            memory_mb=512,
            concurrency=1,  # one migration at a time, whatever CloudFormation retries
            environment={
                "DSQL_ENDPOINT": self.endpoint,
                "DSQL_USER": "admin",
                "DB_SCHEMA": config.db_schema,
                "DB_WORKER_ROLE": config.db_worker_role,
                "DB_READER_ROLE": config.db_reader_role,
                "LOG_FORMAT": "json",
            },
            description="dsql-transfers: create the schema and database roles (deploy time)",
        )
        provider_logs = self._log_group("MigrationProviderLogs")
        provider_role = self._function_role("MigrationProviderRole", provider_logs)
        findings.nag(
            provider_role,
            f"AwsSolutions-IAM5[Resource::<{_logical(function)}.Arn>:*]",
            "invoking any version of the migration function",
        )
        provider = custom_resources.Provider(
            self,
            "MigrationProvider",
            on_event_handler=function,
            log_group=provider_logs,
            # Its own log group only, like our functions (not AWSLambdaBasicExecutionRole);
            # the Provider adds the permission to invoke the migration function.
            framework_on_event_role=provider_role,
        )
        _accept_provider_framework(provider)
        return CustomResource(
            self,
            "Migration",
            service_token=provider.service_token,
            resource_type="Custom::DsqlTransfersMigration",
            properties={
                "WorkerRoleArns": [r.role_arn for r in worker_roles],
                "ReaderRoleArns": list(config.reader_role_arns),
                "Version": migration_version(
                    config.path(config.lambda_zip),
                    (config.db_schema, config.db_worker_role, config.db_reader_role),
                ),
            },
        )

    # --- ECS Fargate ------------------------------------------------------------------

    def _fargate_worker(self) -> iam.IRole:
        config = self.config
        network = WorkerNetwork(
            self,
            "Network",
            config=config,
            cluster=self.cluster,
            removal_policy=self.removal_policy,
        )
        # Container Insights publishes RunningTaskCount, the divisor of backlog per task.
        cluster = ecs.Cluster(
            self,
            "WorkerCluster",
            vpc=network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
            enable_fargate_capacity_providers=config.fargate_spot,
        )
        self.ecs_cluster = cluster

        arm = config.task_architecture is Architecture.ARM64
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
        # The root filesystem is read-only; the heartbeat file lives on task storage.
        task.add_volume(name="tmp")
        image = ecs.ContainerImage.from_asset(
            str(config.path(config.image_directory)),
            exclude=IMAGE_EXCLUDE,
            # Build for the task's architecture whatever machine runs `cdk deploy`.
            platform=ecr_assets.Platform.LINUX_ARM64 if arm else ecr_assets.Platform.LINUX_AMD64,
        )
        # Through PrivateLink the cluster has a name of its own, which the endpoint's
        # private DNS resolves inside the VPC.
        endpoint = self.cluster.attr_vpc_endpoint if network.dsql_endpoint else self.endpoint
        environment = {
            **self._environment(config.pool_min_size, config.pool_max_size),
            "DSQL_ENDPOINT": endpoint,
            "AWS_REGION": Aws.REGION,
            "DRAIN_TIMEOUT_S": str(config.drain_timeout_s),
            "WORKER_PROCESSES": str(config.worker_processes),
            # The queue's own value, so the worker need not ask for it at start-up.
            "VISIBILITY_TIMEOUT_S": str(config.visibility_timeout_s),
        }
        container = task.add_container(
            "worker",
            image=image,  # ENTRYPOINT python -m worker, CMD run
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="worker", log_group=self._log_group("WorkerLogs")
            ),
            health_check=ecs.HealthCheck(
                command=HEALTH_COMMAND,
                interval=Duration.seconds(15),
                timeout=Duration.seconds(5),
                retries=3,
                start_period=Duration.seconds(30),
            ),
            readonly_root_filesystem=True,
            # SIGTERM, then DRAIN_TIMEOUT_S for in-flight transfers, then SIGKILL.
            stop_timeout=Duration.seconds(config.stop_timeout_s),
        )
        container.add_mount_points(
            ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False)  # noqa: S108
        )
        findings.nag(task, "AwsSolutions-ECS2", NO_SECRETS_REASON)
        if task.execution_role is not None:
            findings.nag(
                task.execution_role,
                "AwsSolutions-IAM5[Resource::*]",
                "ecr:GetAuthorizationToken has no resource-level permissions",
            )
        self._grant_worker(task.task_role)

        failed = self.monitoring.worker_alarms(CONTAINER)
        spot = [
            # The first task on regular Fargate, the rest on Spot: the worker is
            # idempotent and drains on SIGTERM, which is all a Spot interruption sends.
            ecs.CapacityProviderStrategy(capacity_provider="FARGATE", base=1, weight=0),
            ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1),
        ]
        self.service = service = ecs.FargateService(
            self,
            "WorkerService",
            cluster=cluster,
            task_definition=task,
            # No desired_count: the scalable target's minimum governs, and a deploy does
            # not reset a scaled-out service to its minimum.
            assign_public_ip=network.public,
            vpc_subnets=network.task_subnet_selection,
            security_groups=[network.security_group],
            platform_version=ecs.FargatePlatformVersion.LATEST,
            capacity_provider_strategies=spot if config.fargate_spot else None,
            # Start replacements before stopping old tasks; roll back a failing image,
            # or one that starts failing transfers.
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            deployment_alarms=ecs.DeploymentAlarmConfig(
                alarm_names=[failed.alarm_name], behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM
            ),
        )
        self._scale_on_backlog(cluster, service)
        self.monitoring.container_alarms(service, cluster)
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

    # --- Lambda -----------------------------------------------------------------------

    def _lambda_worker(self) -> lambda_.Function:
        config = self.config
        log_group = self._log_group("FunctionLogs")
        function = self._function(
            "Function",
            handler=WORKER_HANDLER,
            role=self._function_role("FunctionRole", log_group),
            log_group=log_group,
            timeout=Duration.seconds(config.lambda_timeout_s),
            memory_mb=config.lambda_memory_mb,
            # At least the event source's maximum concurrency: fewer would throttle the
            # poller's invocations, and each throttled batch costs its messages a receive.
            concurrency=config.function_concurrency,
            environment={
                **self._environment(config.lambda_pool_min_size, config.lambda_pool_max_size),
                "LAMBDA_RESERVE_MS": str(config.lambda_reserve_ms),
            },
            description="dsql-transfers worker: SQS batch -> DSQL transfers",
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
        self.monitoring.worker_alarms(FUNCTION)
        self.monitoring.function_alarms(function)
        if function.role is not None:
            CfnOutput(self, "FunctionRoleArn", value=function.role.role_arn)
        CfnOutput(self, "FunctionName", value=function.function_name)
        return function

    # --- outputs ----------------------------------------------------------------------

    def _outputs(self) -> None:
        CfnOutput(self, "ClusterIdentifier", value=self.cluster.attr_identifier)
        CfnOutput(self, "ClusterEndpoint", value=self.endpoint)
        CfnOutput(self, "ClusterArn", value=self.cluster.attr_resource_arn)
        CfnOutput(self, "Region", value=Aws.REGION)
        CfnOutput(self, "QueueUrl", value=self.queue.queue_url)
        CfnOutput(self, "DlqUrl", value=self.dlq.queue_url)
        CfnOutput(self, "ProducerPolicyArn", value=self.producer_policy.managed_policy_arn)
        CfnOutput(self, "ReaderPolicyArn", value=self.reader_policy.managed_policy_arn)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "DashboardName", value=self.config.resolved_stack_name)


def check_lambda_zip(path: Path, architecture: Architecture) -> None:
    """Refuse a missing zip, or one whose binary wheels cannot run on the function.

    psycopg's and pydantic-core's wheels are native: a zip built for the other
    architecture or another CPython deploys fine and fails on its first import.
    """
    if not path.is_file():
        raise InvalidContext(
            f"lambdaZip: {path} does not exist; run `make lambda-zip` (ARCH={architecture}) "
            "or pass -c lambdaZip=<path>"
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
            f"`python -m sandbox.lambda_zip --arch {architecture}` or set lambdaArchitecture"
        )


def migration_version(zip_path: Path, names: tuple[str, ...]) -> str:
    """The custom resource's ``Version``: it changes when a re-run is wanted, that is when
    the code in the zip (worker/schema.py is in it) or the names the migration creates
    change. Role ARNs are properties of their own, so a new role re-runs it too."""
    digest = hashlib.sha256(zip_path.read_bytes())
    for name in names:
        digest.update(b"\0" + name.encode())
    return digest.hexdigest()[:16]


# --- helpers --------------------------------------------------------------------------


def _accept_provider_framework(provider: custom_resources.Provider) -> None:
    """The custom-resource framework Lambda is CDK's own code (its runtime is CDK's
    choice); it only invokes the migration function."""
    framework = provider.node.find_child("framework-onEvent")
    for check, why in (
        ("CKV_AWS_116", "invoked synchronously by CloudFormation"),
        ("CKV_AWS_117", "CDK's framework function calls only the Lambda API"),
        ("CKV_AWS_173", NO_SECRETS_REASON),
        ("CKV_AWS_115", "runs once per deployment"),
    ):
        findings.checkov(framework, check, why)
    findings.cfn_lint(framework, "W3005", CDK_ROLE_DEPENDENCY)


def _logical(construct: IConstruct) -> str:
    """A construct's CloudFormation logical id (as cdk-nag spells it in finding ids)."""
    resource = construct.node.default_child
    stack = Stack.of(construct)
    return stack.resolve(resource.logical_id) if resource is not None else ""  # type: ignore[attr-defined]


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
