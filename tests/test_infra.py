"""The CDK stack (infra/): what it deploys, the knobs it takes, the IAM it grants, the
alarms that watch it, and what cfn-lint, checkov and cdk-nag say about it.

Synthesized in-process, without Docker or AWS, against a tiny Lambda zip and a stub
image directory. Synth is slow (about 3 s a variant with cdk-nag), so each of the four
variants is synthesized once per module and every test and linter reads those.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from infra import app as infra_app
from infra.capacity import (
    DSQL_CONNECTION_BURST,
    DSQL_CONNECTION_RATE_PER_S,
    DSQL_MAX_CONNECTIONS,
    ConnectionBudget,
    fargate_size_problem,
)
from infra.config import Architecture, InvalidContext, StackConfig, context_defaults
from infra.stack import MIGRATE_HANDLER, WORKER_HANDLER, check_lambda_zip, migration_version
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
CHECKOV = Path(os.environ.get("CHECKOV") or ROOT / "build" / "checkov-venv" / "bin" / "checkov")
REDELIVERY_ENV = (
    "RETRY_VISIBILITY_S",
    "RETRY_VISIBILITY_GROWTH",
    "RETRY_VISIBILITY_MAX_S",
    "REDELIVERY_HORIZON_S",
)


class Synth:
    """One synthesized variant: its stack, its template as JSON and as an assertions
    Template, and the cloud assembly directory it was written to."""

    def __init__(self, outdir: Path, overrides: dict[str, Any]) -> None:
        _app, self.stack = infra_app.build_app(overrides, outdir=str(outdir))
        self.template = Template.from_stack(self.stack)  # synthesizes, cdk-nag included
        self.json: dict[str, Any] = dict(self.template.to_json())
        self.outdir = outdir
        self.path = outdir / f"{self.stack.stack_name}.template.json"

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        """Logical id -> resource, for every resource of CloudFormation type ``kind``."""
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == kind}

    def one(self, kind: str) -> dict[str, Any]:
        """The properties of the only resource of type ``kind``."""
        (resource,) = self.resources(kind).values()
        props: dict[str, Any] = resource["Properties"]
        return props

    def logical_id(self, prefix: str, kind: str) -> str:
        """The logical id of the only resource of ``kind`` whose id starts with ``prefix``."""
        (found,) = [k for k in self.resources(kind) if k.startswith(prefix)]
        return found

    def queue_ids(self) -> tuple[str, str]:
        """Logical ids of the transfer queue (the one with a redrive policy) and its DLQ."""
        queues = self.resources("AWS::SQS::Queue")
        (queue,) = [k for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
        (dlq,) = set(queues) - {queue}
        return queue, dlq

    def queue(self) -> dict[str, Any]:
        """The transfer queue's properties."""
        props: dict[str, Any] = self.json["Resources"][self.queue_ids()[0]]["Properties"]
        return props

    def function(self, prefix: str) -> dict[str, Any]:
        """The properties of the Lambda function whose logical id starts with ``prefix``."""
        props: dict[str, Any] = self.json["Resources"][
            self.logical_id(prefix, "AWS::Lambda::Function")
        ]["Properties"]
        return props

    def container(self) -> dict[str, Any]:
        """The worker's container definition."""
        (container,) = self.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
        return dict(container)

    def alarms(self) -> dict[str, dict[str, Any]]:
        """Alarm construct id (``DlqNotEmpty``) -> its properties."""
        found = {}
        for logical, alarm in self.resources("AWS::CloudWatch::Alarm").items():
            match = re.fullmatch(r"Monitoring([A-Za-z0-9]+?)[0-9A-F]{8}", logical)
            assert match, logical
            found[match[1]] = alarm["Properties"]
        return found

    def statements(self) -> list[dict[str, Any]]:
        """Every IAM policy statement in the template (policies, managed, inline, queue)."""
        found: list[dict[str, Any]] = []
        for resource in self.json["Resources"].values():
            props = resource.get("Properties", {})
            documents = [props.get("PolicyDocument")]
            documents += [p.get("PolicyDocument") for p in props.get("Policies", [])]
            for document in documents:
                if document:
                    found += document["Statement"]
        return found

    def role_statements(self, role: Any) -> list[dict[str, Any]]:
        """Statements of the inline policies attached to ``role`` (a GetAtt of its ARN,
        or a logical id)."""
        role_id = role if isinstance(role, str) else role["Fn::GetAtt"][0]
        found: list[dict[str, Any]] = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                found += policy["Properties"]["PolicyDocument"]["Statement"]
        props = self.json["Resources"][role_id]["Properties"]
        found += [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        return found

    def depends_on(self, logical_id: str) -> list[str]:
        """The explicit DependsOn of a resource."""
        value = self.json["Resources"][logical_id].get("DependsOn", [])
        return [value] if isinstance(value, str) else list(value)

    def validation_report(self) -> dict[str, Any]:
        """cdk-nag's report of this synth (policy-validation plugins write it)."""
        report: dict[str, Any] = json.loads((self.outdir / "validation-report.json").read_text())
        return report


def actions(statement: dict[str, Any]) -> set[str]:
    """A statement's actions as a set (CloudFormation allows a string or a list)."""
    value = statement.get("Action", [])
    return {value} if isinstance(value, str) else set(value)


def resources_of(statement: dict[str, Any]) -> list[Any]:
    """A statement's resources as a list."""
    value = statement.get("Resource", [])
    return value if isinstance(value, list) else [value]


def arn_of(logical_id: str) -> dict[str, Any]:
    """The template expression for a resource's ARN attribute."""
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def environment(container_or_function: dict[str, Any]) -> dict[str, Any]:
    """Env vars of an ECS container definition or a Lambda function, as a dict."""
    env = container_or_function["Environment"]
    if isinstance(env, list):  # ECS: [{"Name": ..., "Value": ...}]
        return {e["Name"]: e["Value"] for e in env}
    variables: dict[str, Any] = env["Variables"]
    return variables


def schedule_of(env: dict[str, Any]) -> RedeliverySchedule:
    """The redelivery schedule a worker is configured with by its environment."""
    return RedeliverySchedule(
        first_delay_s=int(env["RETRY_VISIBILITY_S"]),
        growth=float(env["RETRY_VISIBILITY_GROWTH"]),
        cap_s=int(env["RETRY_VISIBILITY_MAX_S"]),
        horizon_s=int(env["REDELIVERY_HORIZON_S"]),
    )


def default_schedule() -> RedeliverySchedule:
    """The schedule of Settings' own defaults (no environment read)."""
    return RedeliverySchedule.from_settings(Settings.model_construct())


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Lambda zip and a stub Docker build context (only hashed at synth)."""
    root = tmp_path_factory.mktemp("infra-fixtures")
    with zipfile.ZipFile(root / "lambda.zip", "w") as archive:
        archive.writestr("worker/__init__.py", "")
    (root / "image").mkdir()
    (root / "image" / "Dockerfile").write_text("FROM scratch\n")
    return root


def _synth(factory: pytest.TempPathFactory, fixtures: Path, **overrides: Any) -> Synth:
    base = {"lambdaZip": str(fixtures / "lambda.zip"), "imageDirectory": str(fixtures / "image")}
    return Synth(factory.mktemp("cdk.out"), {**base, **overrides})


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Synth:
    """cdk.json's defaults: Fargate in private subnets behind one NAT, protected data."""
    return _synth(tmp_path_factory, fixtures_dir)


@pytest.fixture(scope="module")
def lambda_only(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Synth:
    """compute=lambda on x86_64 in a staging environment, with strings as `cdk -c` passes
    them: a shorter, slower-growing redelivery schedule, an alarm e-mail, reader roles."""
    return _synth(
        tmp_path_factory,
        fixtures_dir,
        compute="lambda",
        environment="staging",
        tags="team=payments,cost-center=42",
        deletionProtection="false",
        lambdaArchitecture="x86_64",
        lambdaTimeoutS="60",
        batchSize="5",
        maxBatchingWindowS="3",
        maxConcurrency="20",
        reservedConcurrency="25",
        redeliveryHorizonS="600",
        retryVisibilityGrowth="1.5",
        retryVisibilityMaxS="120",
        alarmEmail="ops@example.com",
        maxMessageAgeS="600",
        transactionP99Ms="100",
        readerRoleArns="arn:aws:iam::123456789012:role/analyst,arn:aws:iam::123456789012:role/bi",
    )


@pytest.fixture(scope="module")
def both_public(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Synth:
    """compute=both, the cheap demo network (public subnets), Fargate Spot, a named
    stack, custom scaling and drain."""
    return _synth(
        tmp_path_factory,
        fixtures_dir,
        compute="both",
        stackName="DemoTransfers",
        subnets="public",
        natGateways="0",
        fargateSpot="true",
        minTasks="2",
        maxTasks="7",
        backlogPerTask="250",
        drainTimeoutS="50",
        stopTimeoutS="80",
    )


@pytest.fixture(scope="module")
def private_link(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Synth:
    """Isolated private subnets (no NAT) reaching DSQL through its PrivateLink endpoint,
    arm64 tasks, an unprotected cluster."""
    return _synth(
        tmp_path_factory,
        fixtures_dir,
        dsqlPrivateLink="true",
        natGateways="0",
        taskArchitecture="arm64",
        taskCpu="1024",
        taskMemoryMb="3072",
        deletionProtection="false",
    )


VARIANTS = ["default", "lambda_only", "both_public", "private_link"]


@pytest.fixture(params=VARIANTS)
def any_variant(request: pytest.FixtureRequest) -> Synth:
    """Each synthesized variant in turn."""
    synth: Synth = request.getfixturevalue(request.param)
    return synth


@pytest.fixture(params=["default", "both_public", "private_link"])
def with_fargate(request: pytest.FixtureRequest) -> Synth:
    """Each variant that runs the container worker."""
    synth: Synth = request.getfixturevalue(request.param)
    return synth


@pytest.fixture(scope="module")
def all_synths(
    default: Synth, lambda_only: Synth, both_public: Synth, private_link: Synth
) -> list[Synth]:
    """Every variant, for the linters (one run each over all templates)."""
    return [default, lambda_only, both_public, private_link]


# --- naming, environments, data protection --------------------------------------------


def test_stack_name_and_tags_come_from_the_context(
    default: Synth, lambda_only: Synth, both_public: Synth
) -> None:
    """One stack per environment by default (DsqlTransfers-<environment>), or stackName;
    every resource is tagged with project, environment and the context's tags."""
    assert default.stack.stack_name == "DsqlTransfers-prod"
    assert lambda_only.stack.stack_name == "DsqlTransfers-staging"
    assert both_public.stack.stack_name == "DemoTransfers"
    queue_tags = {t["Key"]: t["Value"] for t in lambda_only.queue()["Tags"]}
    assert queue_tags == {
        "project": "dsql-transfers",
        "environment": "staging",
        "team": "payments",
        "cost-center": "42",
    }


def test_metrics_namespace_is_per_environment(default: Synth, lambda_only: Synth) -> None:
    """Workers emit into DsqlTransfers/<environment> and the alarms watch that namespace,
    so staging and production in one account never see each other's metrics."""
    assert environment(default.container())["METRICS_NAMESPACE"] == "DsqlTransfers/prod"
    assert environment(lambda_only.function("Function"))["METRICS_NAMESPACE"] == (
        "DsqlTransfers/staging"
    )
    namespaces = {
        a["Namespace"] for a in lambda_only.alarms().values() if a["Namespace"] != "AWS/SQS"
    }
    assert namespaces == {"DsqlTransfers/staging", "AWS/Lambda"}


def test_protected_data_is_retained_and_the_stack_termination_protected(default: Synth) -> None:
    """With deletionProtection (the default) the cluster, both queues and the log groups
    survive `cdk destroy` and replacement, and the stack has termination protection."""
    assert default.stack.termination_protection is True
    default.template.has_resource(
        "AWS::DSQL::Cluster",
        {"Properties": {"DeletionProtectionEnabled": True}, "DeletionPolicy": "Retain"},
    )
    for kind in ("AWS::SQS::Queue", "AWS::Logs::LogGroup", "AWS::DSQL::Cluster"):
        resources = default.resources(kind).values()
        assert resources, kind
        assert {(r["DeletionPolicy"], r["UpdateReplacePolicy"]) for r in resources} == {
            ("Retain", "Retain")
        }, kind


def test_unprotected_stacks_clean_up(lambda_only: Synth) -> None:
    """deletionProtection=false (a CLI string): no protection, and destroy deletes."""
    assert lambda_only.stack.termination_protection is False
    lambda_only.template.has_resource(
        "AWS::DSQL::Cluster",
        {"Properties": {"DeletionProtectionEnabled": False}, "DeletionPolicy": "Delete"},
    )
    assert {q["DeletionPolicy"] for q in lambda_only.resources("AWS::SQS::Queue").values()} == {
        "Delete"
    }


# --- queues and the redelivery schedule -----------------------------------------------


def test_queues_are_encrypted_and_redrive_to_the_dlq(any_variant: Synth) -> None:
    """Both queues use SQS-managed SSE and refuse plain HTTP; the queue redrives to the DLQ."""
    queues = any_variant.resources("AWS::SQS::Queue")
    assert len(queues) == 2
    assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues.values())
    _queue_id, dlq_id = any_variant.queue_ids()
    assert any_variant.queue()["RedrivePolicy"]["deadLetterTargetArn"] == arn_of(dlq_id)
    ssl = [
        s
        for s in any_variant.statements()
        if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        and actions(s) == {"sqs:*"}
    ]
    assert len(ssl) == 2
    assert all(s["Effect"] == "Deny" for s in ssl)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("default", default_schedule()),
        ("lambda_only", RedeliverySchedule(2, 1.5, 120, 600)),
    ],
)
def test_max_receive_count_is_computed_from_the_redelivery_schedule(
    variant: str, expected: RedeliverySchedule, request: pytest.FixtureRequest
) -> None:
    """maxReceiveCount is no free parameter: it is the schedule's receive count for the
    context's delays and horizon (13 for Settings' defaults, 14 for 2 s x 1.5 capped at
    120 s over 600 s)."""
    synth: Synth = request.getfixturevalue(variant)
    count = synth.queue()["RedrivePolicy"]["maxReceiveCount"]
    assert count == expected.max_receive_count
    assert count == {"default": 13, "lambda_only": 14}[variant]


def test_queue_covers_the_horizon_the_workers_are_configured_with(any_variant: Synth) -> None:
    """Every worker gets the same RETRY_VISIBILITY_*/REDELIVERY_HORIZON_S, and the
    queue's receive count covers that horizon: a transfer that waits for the database is
    redelivered for at least REDELIVERY_HORIZON_S before it is dead-lettered."""
    envs = [environment(f) for k, f in _worker_functions(any_variant).items()]
    if any_variant.resources("AWS::ECS::TaskDefinition"):
        envs.append(environment(any_variant.container()))
    assert envs
    configured = {tuple(env[key] for key in REDELIVERY_ENV) for env in envs}
    assert len(configured) == 1, "worker and function disagree on the schedule"
    schedule = schedule_of(envs[0])
    count = any_variant.queue()["RedrivePolicy"]["maxReceiveCount"]
    assert schedule.covered_s(count) >= schedule.horizon_s
    assert schedule.covered_s(count - 1) < schedule.horizon_s  # and not more receives


def test_dlq_keeps_messages_longer_than_the_queue(default: Synth) -> None:
    """The DLQ's retention (14 days) exceeds the queue's, as redrive keeps the enqueue time."""
    queue_id, dlq_id = default.queue_ids()
    queue = default.json["Resources"][queue_id]["Properties"]
    dlq = default.json["Resources"][dlq_id]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


@pytest.mark.parametrize(("variant", "timeout"), [("both_public", 30), ("lambda_only", 60)])
def test_visibility_timeout_is_six_times_the_function_timeout(
    variant: str, timeout: int, request: pytest.FixtureRequest
) -> None:
    """The queue's visibility timeout is 6x the function timeout (and at least 60 s)."""
    synth: Synth = request.getfixturevalue(variant)
    assert synth.function("Function")["Timeout"] == timeout
    assert synth.queue()["VisibilityTimeout"] == 6 * timeout


def test_elasticmq_agrees_with_the_stack_on_the_receive_count(default: Synth) -> None:
    """The compose queue redrives after as many receives as the deployed one."""
    text = (ROOT / "compose" / "elasticmq.conf").read_text()
    (local,) = re.findall(r"maxReceiveCount\s*=\s*(\d+)", text)
    assert int(local) == default.queue()["RedrivePolicy"]["maxReceiveCount"]


# --- deploy-time migration ------------------------------------------------------------


def _worker_functions(synth: Synth) -> dict[str, dict[str, Any]]:
    """The transfer-processing function(s): the one whose handler is the worker's."""
    return {
        k: f["Properties"]
        for k, f in synth.resources("AWS::Lambda::Function").items()
        if f["Properties"].get("Handler") == WORKER_HANDLER
    }


def test_migration_runs_as_admin_in_a_custom_resource(default: Synth) -> None:
    """worker.ops.migrate_handler.on_event runs from the Lambda zip as admin, with 15
    minutes for ASYNC index builds, the schema and role names, one at a time."""
    function = default.function("MigrationFunction")
    assert function["Handler"] == MIGRATE_HANDLER
    assert function["Timeout"] == 900
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Architectures"] == ["arm64"]
    env = environment(function)
    assert env["DSQL_USER"] == "admin"
    assert env["DSQL_ENDPOINT"] == {"Fn::GetAtt": ["Cluster", "Endpoint"]}
    assert {k: env[k] for k in ("DB_SCHEMA", "DB_WORKER_ROLE", "DB_READER_ROLE")} == {
        "DB_SCHEMA": "public",
        "DB_WORKER_ROLE": "transfers_worker",
        "DB_READER_ROLE": "transfers_reader",
    }
    assert "AWS_REGION" not in env  # reserved: the runtime sets it
    (resource,) = default.resources("Custom::DsqlTransfersMigration").values()
    props = resource["Properties"]
    provider = default.logical_id("MigrationProviderframeworkonEvent", "AWS::Lambda::Function")
    assert props["ServiceToken"] == arn_of(provider)
    assert re.fullmatch(r"[0-9a-f]{16}", props["Version"])


def test_migration_maps_the_worker_and_reader_roles(both_public: Synth, lambda_only: Synth) -> None:
    """WorkerRoleArns are the task and function roles; ReaderRoleArns the context's."""
    (resource,) = both_public.resources("Custom::DsqlTransfersMigration").values()
    task_role = both_public.one("AWS::ECS::TaskDefinition")["TaskRoleArn"]
    (function,) = _worker_functions(both_public).values()
    assert resource["Properties"]["WorkerRoleArns"] == [task_role, function["Role"]]
    assert resource["Properties"]["ReaderRoleArns"] == []
    (resource,) = lambda_only.resources("Custom::DsqlTransfersMigration").values()
    assert resource["Properties"]["ReaderRoleArns"] == [
        "arn:aws:iam::123456789012:role/analyst",
        "arn:aws:iam::123456789012:role/bi",
    ]


def test_workers_start_only_after_the_migration(both_public: Synth) -> None:
    """The ECS service, the function and its event source mapping depend on the custom
    resource: no worker runs before its tables and database role exist."""
    (migration,) = both_public.resources("Custom::DsqlTransfersMigration")
    service = both_public.logical_id("WorkerService", "AWS::ECS::Service")
    (mapping,) = both_public.resources("AWS::Lambda::EventSourceMapping")
    (function,) = _worker_functions(both_public)
    for logical_id in (service, mapping, function):
        assert migration in both_public.depends_on(logical_id), logical_id


def test_migration_version_changes_with_the_code_and_the_names(tmp_path: Path) -> None:
    """A new zip or new role/schema names re-run the migration; the same inputs do not."""
    first = tmp_path / "a.zip"
    first.write_bytes(b"one")
    second = tmp_path / "b.zip"
    second.write_bytes(b"two")
    names = ("public", "transfers_worker", "transfers_reader")
    assert migration_version(first, names) == migration_version(first, names)
    assert migration_version(first, names) != migration_version(second, names)
    assert migration_version(first, names) != migration_version(
        first, ("staging", "transfers_worker", "transfers_reader")
    )


# --- least privilege ------------------------------------------------------------------


def test_only_the_migration_may_connect_as_admin(any_variant: Synth) -> None:
    """dsql:DbConnectAdmin appears once, on the migration role; workers get DbConnect;
    no dsql action is granted on a wildcard."""
    dsql = [s for s in any_variant.statements() if any(a.startswith("dsql") for a in actions(s))]
    assert all(resources_of(s) == [{"Fn::GetAtt": ["Cluster", "ResourceArn"]}] for s in dsql)
    admin = [s for s in dsql if "dsql:DbConnectAdmin" in actions(s)]
    migration_role = any_variant.function("MigrationFunction")["Role"]
    assert admin == [
        s
        for s in any_variant.role_statements(migration_role)
        if "dsql:DbConnectAdmin" in actions(s)
    ]
    assert len(admin) == 1


def test_workers_connect_as_the_worker_role(any_variant: Synth) -> None:
    """Task and function connect as transfers_worker with dsql:DbConnect only."""
    workers = [f for f in _worker_functions(any_variant).values()]
    roles = [f["Role"] for f in workers]
    envs = [environment(f) for f in workers]
    for task in any_variant.resources("AWS::ECS::TaskDefinition").values():
        roles.append(task["Properties"]["TaskRoleArn"])
        envs.append(environment(any_variant.container()))
    assert roles
    for role in roles:
        granted = {a for s in any_variant.role_statements(role) for a in actions(s)}
        assert {a for a in granted if a.startswith("dsql:")} == {"dsql:DbConnect"}
    assert {env["DSQL_USER"] for env in envs} == {"transfers_worker"}


def test_worker_roles_consume_the_queue_and_send_to_the_dlq_only(any_variant: Synth) -> None:
    """Task and function roles: consume actions on the queue, SendMessage on the DLQ only."""
    queue_id, dlq_id = any_variant.queue_ids()
    roles = [f["Role"] for f in _worker_functions(any_variant).values()]
    roles += [
        t["Properties"]["TaskRoleArn"]
        for t in any_variant.resources("AWS::ECS::TaskDefinition").values()
    ]
    for role in roles:
        sqs = [s for s in any_variant.role_statements(role) if any("sqs:" in a for a in actions(s))]
        on_queue = {a for s in sqs if resources_of(s) == [arn_of(queue_id)] for a in actions(s)}
        on_dlq = {a for s in sqs if resources_of(s) == [arn_of(dlq_id)] for a in actions(s)}
        assert on_queue >= CONSUME
        assert "sqs:SendMessage" not in on_queue
        assert on_dlq == {"sqs:SendMessage"}
        assert all(resources_of(s) in ([arn_of(queue_id)], [arn_of(dlq_id)]) for s in sqs)


def test_functions_write_only_their_own_log_group(any_variant: Synth) -> None:
    """Our function roles carry no managed policy (no AWSLambdaBasicExecutionRole):
    CreateLogStream/PutLogEvents on the function's own log group, nothing else on logs."""
    functions = {
        k: f
        for k, f in any_variant.resources("AWS::Lambda::Function").items()
        if f["Properties"]["Handler"] in (WORKER_HANDLER, MIGRATE_HANDLER)
    }
    assert functions
    for logical_id, function in functions.items():
        props = function["Properties"]
        role_id = props["Role"]["Fn::GetAtt"][0]
        assert "ManagedPolicyArns" not in any_variant.json["Resources"][role_id]["Properties"]
        group = props["LoggingConfig"]["LogGroup"]["Ref"]
        logs = [
            s
            for s in any_variant.role_statements(role_id)
            if any(a.startswith("logs:") for a in actions(s))
        ]
        assert logs, logical_id
        assert {a for s in logs for a in actions(s)} == {
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        }
        assert all(resources_of(s) == [arn_of(group)] for s in logs), logical_id


def test_no_role_uses_a_managed_policy(any_variant: Synth) -> None:
    """No role in the stack (ours, ECS's, CDK's custom-resource framework) attaches an
    AWS managed policy: every permission is spelled out for its resource."""
    roles = any_variant.resources("AWS::IAM::Role")
    assert roles
    assert {k for k, r in roles.items() if "ManagedPolicyArns" in r["Properties"]} == set()


def test_producer_policy_may_only_send(default: Synth) -> None:
    """The producer managed policy sends to the queue and cannot receive or delete."""
    queue_id, _dlq_id = default.queue_ids()
    policy = default.json["Resources"][
        default.logical_id("ProducerPolicy", "AWS::IAM::ManagedPolicy")
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    granted = {a for s in statements for a in actions(s)}
    assert "sqs:SendMessage" in granted
    assert granted <= {"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"}
    assert all(resources_of(s) == [arn_of(queue_id)] for s in statements)


def test_reader_policy_connects_as_a_non_admin_role(default: Synth) -> None:
    """The reader managed policy grants dsql:DbConnect on the cluster and nothing else."""
    policy = default.json["Resources"][
        default.logical_id("ReaderPolicy", "AWS::IAM::ManagedPolicy")
    ]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert actions(statement) == {"dsql:DbConnect"}
    assert resources_of(statement) == [{"Fn::GetAtt": ["Cluster", "ResourceArn"]}]


# --- Lambda ---------------------------------------------------------------------------


def test_function_defaults_to_arm64(both_public: Synth, lambda_only: Synth) -> None:
    """The worker function is python3.12 on arm64 by default; lambdaArchitecture=x86_64
    switches it (and the migration function, which runs from the same zip)."""
    (function,) = _worker_functions(both_public).values()
    assert (function["Runtime"], function["Architectures"]) == ("python3.12", ["arm64"])
    (function,) = _worker_functions(lambda_only).values()
    assert function["Architectures"] == ["x86_64"]
    assert lambda_only.function("MigrationFunction")["Architectures"] == ["x86_64"]


@pytest.mark.parametrize(
    ("variant", "batch", "window", "concurrency", "reserved"),
    [("both_public", 10, 1, 10, 10), ("lambda_only", 5, 3, 20, 25)],
)
def test_event_source_mapping_and_reserved_concurrency(
    variant: str,
    batch: int,
    window: int,
    concurrency: int,
    reserved: int,
    request: pytest.FixtureRequest,
) -> None:
    """The SQS mapping reports partial batch failures and takes batch/window/concurrency;
    the function's reserved concurrency is at least the mapping's maximum concurrency."""
    synth: Synth = request.getfixturevalue(variant)
    mapping = synth.one("AWS::Lambda::EventSourceMapping")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == batch
    assert mapping["MaximumBatchingWindowInSeconds"] == window
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency}
    queue_id, _dlq_id = synth.queue_ids()
    assert mapping["EventSourceArn"] == arn_of(queue_id)
    (function,) = _worker_functions(synth).values()
    assert function["ReservedConcurrentExecutions"] == reserved
    assert (
        function["ReservedConcurrentExecutions"] >= mapping["ScalingConfig"]["MaximumConcurrency"]
    )


def test_function_pool_is_no_larger_than_a_batch(lambda_only: Synth, both_public: Synth) -> None:
    """An environment runs one batch at a time: POOL_MAX_SIZE is min(poolMaxSize,
    batchSize), and POOL_MIN_SIZE stays within it."""
    env = environment(lambda_only.function("Function"))
    assert (env["POOL_MIN_SIZE"], env["POOL_MAX_SIZE"]) == ("2", "5")
    env = environment(both_public.function("Function"))
    assert (env["POOL_MIN_SIZE"], env["POOL_MAX_SIZE"]) == ("2", "10")


# --- Fargate --------------------------------------------------------------------------


def test_service_has_no_desired_count(with_fargate: Synth) -> None:
    """The template sets no DesiredCount: the scalable target's minimum governs, so a
    deploy never resets a scaled-out service to its minimum."""
    assert "DesiredCount" not in with_fargate.one("AWS::ECS::Service")


def test_deployments_roll_back_on_the_failed_alarm(with_fargate: Synth) -> None:
    """The circuit breaker rolls back a release that does not start, and the deployment
    alarm (the container's Failed alarm) one that starts failing transfers."""
    config = with_fargate.one("AWS::ECS::Service")["DeploymentConfiguration"]
    assert config["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert (config["MinimumHealthyPercent"], config["MaximumPercent"]) == (100, 200)
    alarms = config["Alarms"]
    assert (alarms["Enable"], alarms["Rollback"]) == (True, True)
    (name,) = alarms["AlarmNames"]
    assert name == {
        "Ref": with_fargate.logical_id("MonitoringWorkerFailed", "AWS::CloudWatch::Alarm")
    }


def test_fargate_spot_is_optional(default: Synth, both_public: Synth) -> None:
    """fargateSpot=true: the first task on Fargate, the rest on Fargate Spot; the default
    runs on Fargate only."""
    service = both_public.one("AWS::ECS::Service")
    assert service["CapacityProviderStrategy"] == [
        {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 0},
        {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
    ]
    assert "LaunchType" not in service
    providers = both_public.one("AWS::ECS::ClusterCapacityProviderAssociations")
    assert set(providers["CapacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}
    service = default.one("AWS::ECS::Service")
    assert "CapacityProviderStrategy" not in service
    assert service["LaunchType"] == "FARGATE"


@pytest.mark.parametrize(
    ("variant", "drain", "stop"), [("default", 25, 40), ("both_public", 50, 80)]
)
def test_container_stop_timeout_exceeds_the_drain_deadline(
    variant: str, drain: int, stop: int, request: pytest.FixtureRequest
) -> None:
    """ECS waits longer after SIGTERM (stopTimeout) than the worker drains (DRAIN_TIMEOUT_S)."""
    synth: Synth = request.getfixturevalue(variant)
    container = synth.container()
    assert float(environment(container)["DRAIN_TIMEOUT_S"]) == drain
    assert container["StopTimeout"] == stop


@pytest.mark.parametrize(
    ("variant", "cpu", "processes"), [("default", 512, 1), ("private_link", 1024, 1)]
)
def test_task_runs_one_worker_process_per_vcpu(
    variant: str, cpu: int, processes: int, request: pytest.FixtureRequest
) -> None:
    """WORKER_PROCESSES follows the task's CPU (one Python process tops out near a core)."""
    synth: Synth = request.getfixturevalue(variant)
    assert int(environment(synth.container())["WORKER_PROCESSES"]) == processes
    assert config(taskCpu=str(cpu), taskMemoryMb=str(2 * cpu)).worker_processes == processes


def test_bigger_tasks_run_more_processes_and_count_their_pools() -> None:
    """4 vCPU: four consumer processes, each with its own pool in the connection budget."""
    big = config(taskCpu="4096", taskMemoryMb="8192")
    assert big.worker_processes == 4
    assert big.connections.task_pool == 4 * big.pool_max_size
    assert big.connections.open_connections == 2 * big.max_tasks * 4 * big.pool_max_size


def test_container_is_read_only_with_a_writable_tmp(default: Synth) -> None:
    """The root filesystem is read-only; /tmp (the heartbeat file) is task storage; the
    health check is liveness (`worker health`, not `--ready`: holding back is healthy)."""
    container = default.container()
    assert container["ReadonlyRootFilesystem"] is True
    assert container["MountPoints"] == [
        {"ContainerPath": "/tmp", "ReadOnly": False, "SourceVolume": "tmp"}  # noqa: S108
    ]
    assert {"Name": "tmp"} in default.one("AWS::ECS::TaskDefinition")["Volumes"]
    assert Settings.model_fields["health_file"].default.startswith("/tmp/")  # noqa: S108
    assert container["HealthCheck"]["Command"] == ["CMD", "python", "-m", "worker", "health"]


def test_container_environment_points_at_cluster_and_queues(default: Synth) -> None:
    """The container gets the endpoint, region, worker role, schema, queue URLs, pool."""
    env = environment(default.container())
    queue_id, dlq_id = default.queue_ids()
    assert env["DSQL_ENDPOINT"] == {"Fn::GetAtt": ["Cluster", "Endpoint"]}
    assert env["AWS_REGION"] == {"Ref": "AWS::Region"}
    assert env["QUEUE_URL"] == {"Ref": queue_id}
    assert env["DLQ_URL"] == {"Ref": dlq_id}
    assert (env["DSQL_USER"], env["DB_SCHEMA"]) == ("transfers_worker", "public")
    assert (env["POOL_MIN_SIZE"], env["POOL_MAX_SIZE"]) == ("2", "10")
    assert env["LOG_FORMAT"] == "json"
    assert env["VISIBILITY_TIMEOUT_S"] == "180"


def test_fargate_arm64_runs_and_builds_arm64(private_link: Synth) -> None:
    """taskArchitecture=arm64 sets the task's runtime platform and the build platform."""
    task = private_link.one("AWS::ECS::TaskDefinition")
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    assert (task["Cpu"], task["Memory"]) == ("1024", "3072")
    assets = json.loads(
        (private_link.outdir / f"{private_link.stack.stack_name}.assets.json").read_text()
    )
    (image,) = assets["dockerImages"].values()
    assert image["source"]["platform"] == "linux/arm64"


@pytest.mark.parametrize(
    ("variant", "low", "high", "target"),
    [("default", 1, 10, 1000), ("both_public", 2, 7, 250)],
)
def test_service_scales_on_backlog_per_task(
    variant: str, low: int, high: int, target: int, request: pytest.FixtureRequest
) -> None:
    """Target tracking on visible messages / running tasks, within minTasks..maxTasks."""
    synth: Synth = request.getfixturevalue(variant)
    scalable = synth.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert (scalable["MinCapacity"], scalable["MaxCapacity"]) == (low, high)
    assert scalable["ScalableDimension"] == "ecs:service:DesiredCount"
    policy = synth.one("AWS::ApplicationAutoScaling::ScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == target
    queries = {q["Id"]: q for q in config["CustomizedMetricSpecification"]["Metrics"]}
    names = {
        q["MetricStat"]["Metric"]["MetricName"]: i for i, q in queries.items() if "MetricStat" in q
    }
    visible, tasks = names["ApproximateNumberOfMessagesVisible"], names["RunningTaskCount"]
    (returned,) = [q for q in queries.values() if q["ReturnData"]]
    assert returned["Expression"].replace(" ", "") == f"{visible}/{tasks}"
    assert synth.one("AWS::ECS::Cluster")["ClusterSettings"] == [
        {"Name": "containerInsights", "Value": "enabled"}
    ]


# --- networking -----------------------------------------------------------------------


def _egress(synth: Synth) -> list[dict[str, Any]]:
    group = synth.logical_id("NetworkTaskSecurityGroup", "AWS::EC2::SecurityGroup")
    rules: list[dict[str, Any]] = synth.json["Resources"][group]["Properties"][
        "SecurityGroupEgress"
    ]
    return rules


def test_tasks_run_in_private_subnets_behind_endpoints_by_default(default: Synth) -> None:
    """No public IP; private subnets with one NAT (for DSQL); interface endpoints for
    SQS, ECR api and dkr, CloudWatch Logs; the S3 gateway endpoint for image layers."""
    network = default.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    private = {
        k
        for k, s in default.resources("AWS::EC2::Subnet").items()
        if s["Properties"]["MapPublicIpOnLaunch"] is False
    }
    assert {s["Ref"] for s in network["Subnets"]} == private
    default.template.resource_count_is("AWS::EC2::NatGateway", 1)
    endpoints = default.resources("AWS::EC2::VPCEndpoint").values()
    services = {  # "com.amazonaws." + region + ".ecr.api"
        e["Properties"]["ServiceName"]["Fn::Join"][1][-1].lstrip(".")
        for e in endpoints
        if e["Properties"]["VpcEndpointType"] == "Interface"
    }
    assert services == {"sqs", "ecr.api", "ecr.dkr", "logs"}
    gateways = [e for e in endpoints if e["Properties"].get("VpcEndpointType") == "Gateway"]
    assert len(gateways) == 1
    assert ".s3" in json.dumps(gateways[0]["Properties"]["ServiceName"])


def test_egress_is_limited_to_443_and_5432(with_fargate: Synth) -> None:
    """The tasks' security group admits nothing and lets out TCP 443 and 5432 only."""
    group = with_fargate.logical_id("NetworkTaskSecurityGroup", "AWS::EC2::SecurityGroup")
    props = with_fargate.json["Resources"][group]["Properties"]
    assert "SecurityGroupIngress" not in props
    ports = {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in _egress(with_fargate)}
    assert ports == {("tcp", 443, 443), ("tcp", 5432, 5432)}
    ingress = [
        r
        for r in with_fargate.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"].get("SourceSecurityGroupId") == {"Fn::GetAtt": [group, "GroupId"]}
    ]
    # Every interface endpoint admits the tasks' group, not the whole VPC.
    assert len(ingress) == len(
        [
            e
            for e in with_fargate.resources("AWS::EC2::VPCEndpoint").values()
            if e["Properties"]["VpcEndpointType"] == "Interface"
        ]
    )


def test_public_subnets_are_the_cheap_demo_mode(both_public: Synth) -> None:
    """subnets=public: a public IP per task, no NAT gateway, no VPC endpoint."""
    network = both_public.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    both_public.template.resource_count_is("AWS::EC2::NatGateway", 0)
    both_public.template.resource_count_is("AWS::EC2::VPCEndpoint", 0)


def test_dsql_privatelink_needs_no_nat(private_link: Synth) -> None:
    """dsqlPrivateLink=true: an interface endpoint for the cluster's own endpoint service
    with private DNS, the worker connects to the cluster's VPC endpoint name, 5432 stays
    inside the VPC, and there is no NAT gateway or internet gateway route."""
    private_link.template.resource_count_is("AWS::EC2::NatGateway", 0)
    private_link.template.resource_count_is("AWS::EC2::InternetGateway", 0)
    private_link.template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "ServiceName": {"Fn::GetAtt": ["Cluster", "VpcEndpointServiceName"]},
            "PrivateDnsEnabled": True,
            "VpcEndpointType": "Interface",
        },
    )
    env = environment(private_link.container())
    assert env["DSQL_ENDPOINT"] == {"Fn::GetAtt": ["Cluster", "VpcEndpoint"]}
    (postgres,) = [r for r in _egress(private_link) if r["FromPort"] == 5432]
    assert "CidrIp" in postgres
    assert postgres["CidrIp"] != "0.0.0.0/0"


def test_vpc_logs_rejected_traffic(default: Synth) -> None:
    """A flow log records what the tightened egress rejects."""
    default.template.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "REJECT"})


# --- alarms and dashboard -------------------------------------------------------------

CONTAINER_ALARMS = {
    "WorkerFailed",
    "WorkerMalformed",
    "WorkerTransactionP99",
    "WorkerHoldingBack",
    "WorkerTasksBelowMinimum",
}
FUNCTION_ALARMS = {
    "FunctionFailed",
    "FunctionMalformed",
    "FunctionTransactionP99",
    "FunctionErrors",
    "FunctionThrottles",
}
QUEUE_ALARMS = {"DlqNotEmpty", "OldestMessageTooOld"}


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("default", QUEUE_ALARMS | CONTAINER_ALARMS),
        ("lambda_only", QUEUE_ALARMS | FUNCTION_ALARMS),
        ("both_public", QUEUE_ALARMS | CONTAINER_ALARMS | FUNCTION_ALARMS),
    ],
)
def test_alarms_for_each_deployed_consumer_notify_the_topic(
    variant: str, expected: set[str], request: pytest.FixtureRequest
) -> None:
    """Queue alarms always; container and function alarms with their compute; each
    notifies the alarm topic when it fires and when it clears."""
    synth: Synth = request.getfixturevalue(variant)
    alarms = synth.alarms()
    assert set(alarms) == expected
    topic = {"Ref": synth.logical_id("MonitoringAlarmTopic", "AWS::SNS::Topic")}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [topic], name
        assert alarm["OKActions"] == [topic], name


def test_alarm_thresholds_come_from_the_context(default: Synth, lambda_only: Synth) -> None:
    """Defaults: age 900 s, Failed/Malformed > 0, p99 > 250 ms, 3 minutes holding back,
    tasks < minTasks; overridden by maxMessageAgeS and transactionP99Ms."""
    alarms = default.alarms()
    assert alarms["DlqNotEmpty"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarms["DlqNotEmpty"]["Threshold"] == 0
    assert alarms["OldestMessageTooOld"]["Threshold"] == 900
    assert alarms["WorkerFailed"]["Threshold"] == 0
    assert alarms["WorkerFailed"]["Statistic"] == "Sum"
    assert alarms["WorkerMalformed"]["Threshold"] == 0
    assert alarms["WorkerTransactionP99"]["ExtendedStatistic"] == "p99"
    assert alarms["WorkerTransactionP99"]["Threshold"] == 250
    holding = alarms["WorkerHoldingBack"]
    assert holding["MetricName"] == "HoldingBack"
    assert (holding["Threshold"], holding["EvaluationPeriods"], holding["Period"]) == (1, 3, 60)
    tasks = alarms["WorkerTasksBelowMinimum"]
    assert (tasks["Threshold"], tasks["ComparisonOperator"]) == (1, "LessThanThreshold")
    assert tasks["TreatMissingData"] == "breaching"
    other = lambda_only.alarms()
    assert other["OldestMessageTooOld"]["Threshold"] == 600
    assert other["FunctionTransactionP99"]["Threshold"] == 100


def test_worker_alarms_watch_their_own_service_dimension(both_public: Synth) -> None:
    """Container alarms watch Service=transfer-worker, function alarms transfer-lambda."""
    for name, alarm in both_public.alarms().items():
        if alarm["Namespace"].startswith("DsqlTransfers/"):
            service = "transfer-worker" if name.startswith("Worker") else "transfer-lambda"
            assert alarm["Dimensions"] == [{"Name": "Service", "Value": service}], name


def test_alarm_email_is_optional(default: Synth, lambda_only: Synth) -> None:
    """alarmEmail subscribes that address to the topic; without it nobody is subscribed."""
    default.template.resource_count_is("AWS::SNS::Subscription", 0)
    lambda_only.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )


def test_every_alarm_is_explained_in_operate_md(both_public: Synth) -> None:
    """docs/operate.md has a section per alarm, and each alarm's description links it."""
    operate = (ROOT / "docs" / "operate.md").read_text()
    headings = set(re.findall(r"^### `?(\w+)`?", operate, flags=re.MULTILINE))
    for name, alarm in both_public.alarms().items():
        assert name in headings, f"docs/operate.md has no section for {name}"
        assert alarm["AlarmDescription"].endswith(f"docs/operate.md#{name.lower()}.")


def test_dashboard_shows_outcomes_latency_queue_and_compute(both_public: Synth) -> None:
    """The dashboard graphs every outcome, retries, transaction and end-to-end
    percentiles, queue depth and age, DLQ depth, tasks and concurrency, alarm states."""
    (dashboard,) = both_public.resources("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "DemoTransfers"
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in (
        "Committed",
        "Rejected",
        "Duplicates",
        "Failed",
        "Malformed",
        "OccRetries",
        "TransactionMs",
        "EndToEndMs",
        "p99",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
        "RunningTaskCount",
        "HoldingBack",
        "ConcurrentExecutions",
        "Throttles",
        "alarm",
        "transfer-worker",
        "transfer-lambda",
    ):
        assert needle in body, needle


# --- outputs and the environment contract ---------------------------------------------


def test_outputs_name_cluster_queues_policies_and_alarms(any_variant: Synth) -> None:
    """Every variant outputs the cluster, queue URLs, client policies and alarm topic."""
    outputs = set(any_variant.json["Outputs"])
    assert {
        "ClusterIdentifier",
        "ClusterEndpoint",
        "QueueUrl",
        "DlqUrl",
        "ProducerPolicyArn",
        "ReaderPolicyArn",
        "AlarmTopicArn",
        "DashboardName",
    } <= outputs


def test_compute_fargate_deploys_no_worker_function(default: Synth) -> None:
    """compute=fargate (the default, one consumer): an ECS service, no worker function."""
    default.template.resource_count_is("AWS::ECS::Service", 1)
    assert _worker_functions(default) == {}
    default.template.resource_count_is("AWS::Lambda::EventSourceMapping", 0)


def test_compute_lambda_deploys_no_ecs_service(lambda_only: Synth) -> None:
    """compute=lambda has the function and no ECS service, cluster or VPC."""
    assert len(_worker_functions(lambda_only)) == 1
    lambda_only.template.resource_count_is("AWS::ECS::Service", 0)
    lambda_only.template.resource_count_is("AWS::ECS::Cluster", 0)
    lambda_only.template.resource_count_is("AWS::EC2::VPC", 0)


def test_every_env_var_is_a_setting(both_public: Synth) -> None:
    """Each env var handed to a container or function is a Settings field."""
    fields = {name.upper() for name in Settings.model_fields}
    names = set(environment(both_public.container()))
    for function in both_public.resources("AWS::Lambda::Function").values():
        if function["Properties"]["Handler"] in (WORKER_HANDLER, MIGRATE_HANDLER):
            names |= set(environment(function["Properties"]))
            assert "AWS_REGION" not in environment(function["Properties"])
    assert names >= {"DSQL_ENDPOINT", "QUEUE_URL", "DLQ_URL", "LAMBDA_RESERVE_MS", *REDELIVERY_ENV}
    assert names <= fields


# --- linters over the synthesized templates -------------------------------------------


def test_cdk_nag_finds_nothing_unaccepted(all_synths: list[Synth]) -> None:
    """cdk-nag's AwsSolutions pack ran on every variant (a violation fails the synth)
    and every accepted finding carries a reason."""
    for synth in all_synths:
        (report,) = synth.validation_report()["pluginReports"]
        assert report["pluginName"] == "AwsSolutions"
        assert (report["conclusion"], report["violations"]) == ("success", [])
        assert report["suppressedViolations"], "the pack did not run"
        for accepted in report["suppressedViolations"]:
            assert len(accepted["reason"]) >= 10, accepted["ruleName"]


def test_cdk_nag_fails_the_synth_on_a_new_finding(fixtures_dir: Path, tmp_path: Path) -> None:
    """An unaccepted finding (an SNS topic that allows plain HTTP) stops the synth."""
    app, stack = infra_app.build_app(
        {"lambdaZip": str(fixtures_dir / "lambda.zip"), "compute": "lambda"}, outdir=str(tmp_path)
    )
    sns.Topic(stack, "Careless")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert "AwsSolutions-SNS3" in rules


def test_cfn_lint_reports_nothing(all_synths: list[Synth]) -> None:
    """cfn-lint finds no error or warning in any synthesized template."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), *(str(s.path) for s in all_synths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_checkov_reports_nothing(all_synths: list[Synth]) -> None:
    """checkov finds no failed check in the templates or the Dockerfile; every skip in
    a template carries a reason. (checkov has its own venv: `make checkov`.)"""
    if not CHECKOV.exists():
        if os.environ.get("CHECKOV"):
            pytest.fail(f"CHECKOV={CHECKOV} does not exist")
        pytest.skip("checkov is not installed: run `make checkov`")
    files = [*(s.path for s in all_synths), ROOT / "Dockerfile"]
    done = subprocess.run(
        [str(CHECKOV), "--skip-download", "--quiet", "--compact", "--output", "json"]
        + ["--framework", "cloudformation", "dockerfile"]
        + [arg for f in files for arg in ("--file", str(f))],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        # No telemetry or guideline download: checkov stays off the network.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        (c["check_id"], c["resource"], c["file_path"])
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert failed == []
    assert {r["check_type"] for r in reports} == {"cloudformation", "dockerfile"}
    assert sum(r["summary"]["passed"] for r in reports) > 100  # it really checked
    for synth in all_synths:
        for logical_id, resource in synth.json["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert len(skip["comment"]) >= 10, (logical_id, skip)


# --- context parsing and capacity (no synth) ------------------------------------------


def config(**context: Any) -> StackConfig:
    """StackConfig from a bare app's context."""
    return StackConfig.from_context(cdk.App(context=context).node)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"maxConcurrency": "1"}, "maxConcurrency=1"),
        ({"compute": "ec2"}, "one of fargate, lambda, both"),
        ({"deletionProtection": "maybe"}, "deletionProtection"),
        ({"drainTimeoutS": "40", "stopTimeoutS": "40"}, "drainTimeoutS=40"),
        ({"stopTimeoutS": "121"}, "stopTimeoutS=121"),
        ({"lambdaReserveMs": "30000"}, "lambdaReserveMs=30000"),
        ({"minTasks": "0"}, "minTasks=0"),
        ({"maxConcurency": "3"}, "did you mean 'maxConcurrency'"),
        ({"nonsense": "3"}, "unknown context parameter 'nonsense'"),
        ({"maxReceiveCount": "5"}, "computed from the redelivery schedule"),
        ({"architecture": "arm64"}, "set lambdaArchitecture and taskArchitecture"),
        ({"dsqlUser": "admin"}, "only the migration uses admin"),
        ({"environment": "Prod!"}, "environment 'Prod!'"),
        ({"dbWorkerRole": "admin"}, "other than admin"),
        ({"readerRoleArns": "arn:aws:iam::1:user/x"}, "is not an IAM role ARN"),
        ({"alarmEmail": "nobody"}, "alarmEmail"),
        ({"tags": "team"}, "tags='team'"),
        ({"retryVisibilityGrowth": "fast"}, "retryVisibilityGrowth='fast'"),
        ({"redeliveryHorizonS": str(10**7)}, "needs more than 1000 receives"),
        ({"retryVisibilityS": "400"}, "redelivery schedule"),
        ({"reservedConcurrency": "5"}, "reservedConcurrency=5"),
        ({"taskCpu": "512", "taskMemoryMb": "512"}, "512 CPU units take 1024..4096"),
        ({"taskCpu": "300"}, "300 CPU units is not a Fargate size"),
        ({"fargateSpot": "true", "taskArchitecture": "arm64"}, "Fargate Spot runs x86_64"),
        ({"natGateways": "0"}, "cannot reach DSQL"),
        ({"subnets": "public"}, "natGateways must be 0 with subnets=public"),
        (
            {"subnets": "public", "natGateways": "0", "dsqlPrivateLink": "true"},
            "needs subnets=private",
        ),
    ],
)
def test_invalid_context_is_refused(context: dict[str, Any], message: str) -> None:
    """Out-of-range, mistyped, misspelt or unsafe context parameters fail before synth."""
    with pytest.raises(InvalidContext, match=re.escape(message)):
        config(**context)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        # 2 x 600 tasks x 10 connections during a deployment: 12,000 > 10,000.
        ({"maxTasks": "600"}, "12000 open database connections"),
        # 150 new tasks x 10 connections at once: 1,500 > the burst of 1,000.
        ({"maxTasks": "150"}, "open 1500 connections at once"),
        # The event source adds 5 environments/s, each with 25 connections: 125/s.
        (
            {
                "compute": "lambda",
                "batchSize": "25",
                "poolMaxSize": "25",
                "maxBatchingWindowS": "1",
            },
            "up to 125 new connections per second",
        ),
        # 1,000 environments x 20 connections.
        (
            {"compute": "lambda", "maxConcurrency": "1000", "batchSize": "20", "poolMaxSize": "20"},
            "20000 open database connections",
        ),
    ],
)
def test_synth_refuses_more_connections_than_dsql_allows(
    context: dict[str, Any], message: str
) -> None:
    """A configuration whose workers could exceed DSQL's 10,000 connections, its burst of
    1,000 or its 100 new connections per second is refused, naming the numbers."""
    with pytest.raises(InvalidContext, match=re.escape(message)):
        config(**context)


def test_connection_budget_of_the_defaults() -> None:
    """The defaults leave ample room: Fargate 2 x 10 x 10 = 200 open, 100 at once."""
    budget = config().connections
    assert (budget.open_connections, budget.burst) == (200, 100)
    assert budget.rate_per_s < 1
    both = config(compute="both").connections
    assert (both.open_connections, both.burst) == (200 + 10 * 10, 100 + 5 * 10)
    assert both.rate_per_s == pytest.approx(50 + 300 / (3000 * 0.95))
    limit = ConnectionBudget(
        task_pool=10, max_tasks=100, lambda_pool=0, lambda_environments=0, pool_max_lifetime_s=3000
    )
    assert limit.burst == DSQL_CONNECTION_BURST
    assert limit.problems() == []
    assert DSQL_MAX_CONNECTIONS == 10_000
    assert DSQL_CONNECTION_RATE_PER_S == 100


@pytest.mark.parametrize(
    ("cpu", "memory", "ok"),
    [
        (256, 512, True),
        (256, 1536, False),
        (256, 2048, True),
        (512, 4096, True),
        (1024, 1024, False),
        (4096, 30720, True),
        (8192, 20480, True),
        (8192, 18432, False),
        (16384, 122880, True),
    ],
)
def test_fargate_sizes(cpu: int, memory: int, ok: bool) -> None:
    """Only the CPU/memory pairs Fargate offers pass."""
    assert (fargate_size_problem(cpu, memory) is None) is ok


def test_cdk_keys_in_the_context_are_not_parameters() -> None:
    """Feature flags and the CLI's own keys pass; they are not misspelt parameters."""
    config(**{"@aws-cdk/core:newStyleStackSynthesis": True, "acknowledged-issue-numbers": [1]})


def test_context_lists_and_maps_from_json_or_the_command_line() -> None:
    """readerRoleArns and tags take a JSON list/object (cdk.json) or a comma string (-c)."""
    arn = "arn:aws:iam::123456789012:role/a"
    assert config(readerRoleArns=[arn]).reader_role_arns == (arn,)
    assert config(readerRoleArns=f"{arn}, ").reader_role_arns == (arn,)
    assert config(tags={"a": "1"}).tags == {"a": "1"}
    assert config(tags="a=1, b = x=y").tags == {"a": "1", "b": "x=y"}
    assert config(retryVisibilityGrowth="1.5").retry_visibility_growth == 1.5


@pytest.mark.parametrize(
    ("tag", "architecture", "runs"),
    [
        ("cp312-cp312-manylinux_2_17_x86_64", "x86_64", True),
        ("cp312-cp312-manylinux_2_17_x86_64", "arm64", False),
        ("cp312-cp312-manylinux_2_28_aarch64", "arm64", True),
        ("cp312-cp312-manylinux2014_aarch64", "x86_64", False),
        ("cp311-cp311-manylinux_2_17_x86_64", "x86_64", False),
        ("cp38-abi3-manylinux_2_17_aarch64", "arm64", True),
        ("py3-none-any", "arm64", True),
    ],
)
def test_lambda_zip_wheels_must_suit_the_runtime(
    tag: str, architecture: str, runs: bool, tmp_path: Path
) -> None:
    """A zip with native wheels for the other architecture or another CPython is refused."""
    path = tmp_path / "lambda.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg-1.0.dist-info/WHEEL", f"Wheel-Version: 1.0\nTag: {tag}\n")
    if runs:
        check_lambda_zip(path, Architecture(architecture))
    else:
        with pytest.raises(InvalidContext, match=f"sandbox.lambda_zip --arch {architecture}"):
            check_lambda_zip(path, Architecture(architecture))


def test_cdk_json_context_matches_the_defaults() -> None:
    """infra/cdk.json carries exactly StackConfig's defaults, and runs app.py."""
    cdk_json = json.loads(infra_app.CDK_JSON.read_text())
    assert cdk_json["context"] == context_defaults()
    assert cdk_json["app"].split()[-1] == "app.py"


def test_app_writes_the_template_to_cdk_outdir(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python infra/app.py -c lambdaZip=...` synthesizes the real repo (Dockerfile)."""
    monkeypatch.setenv("CDK_OUTDIR", str(tmp_path))
    assert infra_app.main(["-c", f"lambdaZip={fixtures_dir / 'lambda.zip'}"]) == 0
    template = json.loads((tmp_path / "DsqlTransfers-prod.template.json").read_text())
    assert "Cluster" in template["Resources"]


def test_app_reports_a_missing_lambda_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing lambdaZip exits 2 naming the fix, instead of a jsii stack trace: every
    compute mode needs it, since the migration runs from it."""
    monkeypatch.setenv("CDK_OUTDIR", str(tmp_path))
    assert infra_app.main(["-c", f"lambdaZip={tmp_path / 'none.zip'}"]) == 2
    assert "make lambda-zip" in capsys.readouterr().err
