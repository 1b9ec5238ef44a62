"""The CDK stack (infra/): what it deploys, the knobs it takes, and the IAM it grants.

Synthesized in-process, without Docker or AWS, against a tiny Lambda zip and a stub
image directory; each stack variant is synthesized once per module (synth is slow).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra import app as infra_app
from infra.stack import (
    Architecture,
    InvalidContext,
    StackConfig,
    check_lambda_zip,
    context_defaults,
)
from worker.settings import Settings

HANDLER = "worker.lambda_handler.handler"
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}


class Synth:
    """One synthesized variant: its template as JSON and as an assertions Template."""

    def __init__(self, outdir: Path, overrides: dict[str, Any]) -> None:
        _app, stack = infra_app.build_app(overrides, outdir=str(outdir))
        self.template = Template.from_stack(stack)
        self.json: dict[str, Any] = dict(self.template.to_json())
        self.outdir = outdir

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        """Logical id -> resource, for every resource of CloudFormation type ``kind``."""
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == kind}

    def one(self, kind: str) -> dict[str, Any]:
        """The properties of the only resource of type ``kind``."""
        (resource,) = self.resources(kind).values()
        props: dict[str, Any] = resource["Properties"]
        return props

    def queue_ids(self) -> tuple[str, str]:
        """Logical ids of the transfer queue (the one with a redrive policy) and its DLQ."""
        queues = self.resources("AWS::SQS::Queue")
        (queue,) = [k for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
        (dlq,) = set(queues) - {queue}
        return queue, dlq

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

    def role_statements(self, role_arn: Any) -> list[dict[str, Any]]:
        """Statements of the inline policies attached to the role ``role_arn`` names."""
        (role_id, _attr) = role_arn["Fn::GetAtt"]
        found: list[dict[str, Any]] = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                found += policy["Properties"]["PolicyDocument"]["Statement"]
        return found


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
    """cdk.json's defaults: compute=both, dsqlUser=admin, x86_64."""
    return _synth(tmp_path_factory, fixtures_dir)


@pytest.fixture(scope="module")
def lambda_only(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Synth:
    """compute=lambda on arm64 as a non-admin role, with strings as `cdk -c` passes them."""
    return _synth(
        tmp_path_factory,
        fixtures_dir,
        compute="lambda",
        architecture="arm64",
        dsqlUser="app",
        lambdaTimeoutS="60",
        batchSize="5",
        maxBatchingWindowS="3",
        maxConcurrency="20",
        maxReceiveCount="3",
    )


@pytest.fixture(scope="module")
def fargate_only(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Synth:
    """compute=fargate on arm64, unprotected cluster, custom scaling and drain."""
    return _synth(
        tmp_path_factory,
        fixtures_dir,
        compute="fargate",
        architecture="arm64",
        deletionProtection="false",
        minTasks="2",
        maxTasks="7",
        backlogPerTask="250",
        drainTimeoutS="50",
        stopTimeoutS="80",
        natGateways="1",
    )


@pytest.fixture(params=["default", "lambda_only", "fargate_only"])
def any_variant(request: pytest.FixtureRequest) -> Synth:
    """Each synthesized variant in turn."""
    synth: Synth = request.getfixturevalue(request.param)
    return synth


# --- DSQL cluster ---------------------------------------------------------------------


def test_cluster_is_deletion_protected_and_retained_by_default(default: Synth) -> None:
    """The default cluster has deletion protection on and survives `cdk destroy`."""
    default.template.has_resource(
        "AWS::DSQL::Cluster",
        {"Properties": {"DeletionProtectionEnabled": True}, "DeletionPolicy": "Retain"},
    )


def test_deletion_protection_off_from_context(fargate_only: Synth) -> None:
    """deletionProtection=false (a CLI string) turns protection off and deletes on destroy."""
    fargate_only.template.has_resource(
        "AWS::DSQL::Cluster",
        {"Properties": {"DeletionProtectionEnabled": False}, "DeletionPolicy": "Delete"},
    )


# --- queues ---------------------------------------------------------------------------


def test_queues_are_encrypted_and_redrive_to_the_dlq(default: Synth, lambda_only: Synth) -> None:
    """Both queues use SQS-managed SSE; the queue redrives to the DLQ after maxReceiveCount."""
    for synth, count in ((default, 5), (lambda_only, 3)):
        queues = synth.resources("AWS::SQS::Queue")
        assert len(queues) == 2
        assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues.values())
        (source,) = [q for q in queues.values() if "RedrivePolicy" in q["Properties"]]
        (dlq_id,) = [k for k, q in queues.items() if "RedrivePolicy" not in q["Properties"]]
        assert source["Properties"]["RedrivePolicy"] == {
            "deadLetterTargetArn": arn_of(dlq_id),
            "maxReceiveCount": count,
        }


def test_dlq_keeps_messages_longer_than_the_queue(default: Synth) -> None:
    """The DLQ's retention (14 days) exceeds the queue's, as redrive keeps the enqueue time."""
    queues = default.resources("AWS::SQS::Queue").values()
    (source,) = [q["Properties"] for q in queues if "RedrivePolicy" in q["Properties"]]
    (dlq,) = [q["Properties"] for q in queues if "RedrivePolicy" not in q["Properties"]]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert dlq["MessageRetentionPeriod"] > source["MessageRetentionPeriod"]


@pytest.mark.parametrize("variant", ["default", "lambda_only"])
def test_visibility_timeout_is_six_times_the_function_timeout(
    variant: str, request: pytest.FixtureRequest
) -> None:
    """The queue's visibility timeout is at least 6x the function timeout and >= 60 s."""
    synth: Synth = request.getfixturevalue(variant)
    (queue,) = [
        q["Properties"]
        for q in synth.resources("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    ]
    timeout = synth.one("AWS::Lambda::Function")["Timeout"]
    assert queue["VisibilityTimeout"] >= max(60, 6 * timeout)
    assert queue["VisibilityTimeout"] == 6 * timeout  # 30 s -> 180 s, 60 s -> 360 s


# --- Lambda ---------------------------------------------------------------------------


def test_function_runs_the_handler_on_python_312_x86_by_default(default: Synth) -> None:
    """The function is python3.12, worker.lambda_handler.handler, x86_64, 30 s."""
    default.template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Runtime": "python3.12", "Handler": HANDLER, "Architectures": ["x86_64"], "Timeout": 30},
    )


def test_function_architecture_arm64_from_context(lambda_only: Synth) -> None:
    """architecture=arm64 builds an arm64 function."""
    lambda_only.template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": HANDLER, "Architectures": ["arm64"]}
    )


@pytest.mark.parametrize(
    ("variant", "batch", "window", "concurrency"),
    [("default", 10, 1, 10), ("lambda_only", 5, 3, 20)],
)
def test_event_source_mapping_reports_partial_batch_failures(
    variant: str, batch: int, window: int, concurrency: int, request: pytest.FixtureRequest
) -> None:
    """The SQS mapping enables ReportBatchItemFailures and takes batch/window/concurrency."""
    synth: Synth = request.getfixturevalue(variant)
    mapping = synth.one("AWS::Lambda::EventSourceMapping")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == batch
    assert mapping["MaximumBatchingWindowInSeconds"] == window
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency}
    queue_id, _dlq_id = synth.queue_ids()
    assert mapping["EventSourceArn"] == arn_of(queue_id)


# --- Fargate --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "fargate_only"])
def test_container_stop_timeout_exceeds_the_drain_deadline(
    variant: str, request: pytest.FixtureRequest
) -> None:
    """ECS waits longer after SIGTERM (stopTimeout) than the worker drains (DRAIN_TIMEOUT_S)."""
    synth: Synth = request.getfixturevalue(variant)
    (container,) = synth.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    drain = float(environment(container)["DRAIN_TIMEOUT_S"])
    assert drain < container["StopTimeout"] <= 120
    assert (drain, container["StopTimeout"]) in ((25, 40), (50, 80))


def test_container_health_check_runs_worker_health(default: Synth) -> None:
    """ECS checks the container with `python -m worker health`."""
    (container,) = default.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    assert " ".join(container["HealthCheck"]["Command"]).endswith("worker health")


def test_container_environment_points_at_cluster_and_queues(default: Synth) -> None:
    """The container gets the cluster endpoint, region, role, queue and DLQ URLs, JSON logs."""
    (container,) = default.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    env = environment(container)
    queue_id, dlq_id = default.queue_ids()
    assert env["DSQL_ENDPOINT"] == {"Fn::GetAtt": ["Cluster", "Endpoint"]}
    assert env["AWS_REGION"] == {"Ref": "AWS::Region"}
    assert env["QUEUE_URL"] == {"Ref": queue_id}
    assert env["DLQ_URL"] == {"Ref": dlq_id}
    assert env["DSQL_USER"] == "admin"
    assert env["LOG_FORMAT"] == "json"
    assert env["VISIBILITY_TIMEOUT_S"] == "180"


def test_fargate_arm64_runs_and_builds_arm64(fargate_only: Synth) -> None:
    """architecture=arm64 sets the task's runtime platform and the image build platform."""
    platform = fargate_only.one("AWS::ECS::TaskDefinition")["RuntimePlatform"]
    assert platform["CpuArchitecture"] == "ARM64"
    assets = json.loads((fargate_only.outdir / "DsqlTransfers.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    assert image["source"]["platform"] == "linux/arm64"


def test_public_subnets_without_nat_private_with_nat(default: Synth, fargate_only: Synth) -> None:
    """natGateways=0 gives tasks a public IP and no NAT; natGateways=1 private subnets."""
    ip = default.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert ip["AssignPublicIp"] == "ENABLED"
    default.template.resource_count_is("AWS::EC2::NatGateway", 0)
    ip = fargate_only.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert ip["AssignPublicIp"] == "DISABLED"
    fargate_only.template.resource_count_is("AWS::EC2::NatGateway", 1)


@pytest.mark.parametrize(
    ("variant", "low", "high", "target"),
    [("default", 1, 10, 1000), ("fargate_only", 2, 7, 250)],
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
    # Container Insights publishes RunningTaskCount.
    assert synth.one("AWS::ECS::Cluster")["ClusterSettings"] == [
        {"Name": "containerInsights", "Value": "enabled"}
    ]


# --- IAM ------------------------------------------------------------------------------


def test_no_dsql_permission_on_a_wildcard_resource(any_variant: Synth) -> None:
    """No statement grants a dsql:* action on Resource "*"."""
    dsql = [s for s in any_variant.statements() if any(a.startswith("dsql") for a in actions(s))]
    assert dsql
    assert all("*" not in resources_of(s) for s in dsql)


@pytest.mark.parametrize(
    ("variant", "action"),
    [("default", "dsql:DbConnectAdmin"), ("lambda_only", "dsql:DbConnect")],
)
def test_dsql_action_matches_the_database_role(
    variant: str, action: str, request: pytest.FixtureRequest
) -> None:
    """admin gets exactly DbConnectAdmin, another role exactly DbConnect, on the cluster only."""
    synth: Synth = request.getfixturevalue(variant)
    dsql = [s for s in synth.statements() if any(a.startswith("dsql") for a in actions(s))]
    assert {a for s in dsql for a in actions(s)} == {action}
    assert all(resources_of(s) == [{"Fn::GetAtt": ["Cluster", "ResourceArn"]}] for s in dsql)


def test_worker_roles_consume_the_queue_and_send_to_the_dlq_only(any_variant: Synth) -> None:
    """Task and function roles: consume actions on the queue, SendMessage on the DLQ only."""
    queue_id, dlq_id = any_variant.queue_ids()
    roles = [
        *(f["Properties"]["Role"] for f in any_variant.resources("AWS::Lambda::Function").values()),
        *(
            t["Properties"]["TaskRoleArn"]
            for t in any_variant.resources("AWS::ECS::TaskDefinition").values()
        ),
    ]
    assert roles
    for role in roles:
        sqs = [s for s in any_variant.role_statements(role) if any("sqs:" in a for a in actions(s))]
        on_queue = {a for s in sqs if resources_of(s) == [arn_of(queue_id)] for a in actions(s)}
        on_dlq = {a for s in sqs if resources_of(s) == [arn_of(dlq_id)] for a in actions(s)}
        assert on_queue >= CONSUME
        assert "sqs:SendMessage" not in on_queue
        assert on_dlq == {"sqs:SendMessage"}
        assert all(resources_of(s) in ([arn_of(queue_id)], [arn_of(dlq_id)]) for s in sqs)


def test_producer_policy_may_only_send(default: Synth) -> None:
    """The producer managed policy sends to the queue and cannot receive or delete."""
    queue_id, _dlq_id = default.queue_ids()
    (policy,) = default.resources("AWS::IAM::ManagedPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    granted = {a for s in statements for a in actions(s)}
    assert "sqs:SendMessage" in granted
    assert granted <= {"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"}
    assert all(resources_of(s) == [arn_of(queue_id)] for s in statements)


# --- compute selection, outputs, environment contract ------------------------------


def test_compute_fargate_deploys_no_function(fargate_only: Synth) -> None:
    """compute=fargate has an ECS service and no Lambda function or event source mapping."""
    fargate_only.template.resource_count_is("AWS::ECS::Service", 1)
    fargate_only.template.resource_count_is("AWS::Lambda::Function", 0)
    fargate_only.template.resource_count_is("AWS::Lambda::EventSourceMapping", 0)


def test_compute_lambda_deploys_no_ecs_service(lambda_only: Synth) -> None:
    """compute=lambda has the function and no ECS service, cluster or VPC."""
    lambda_only.template.resource_count_is("AWS::Lambda::Function", 1)
    lambda_only.template.resource_count_is("AWS::ECS::Service", 0)
    lambda_only.template.resource_count_is("AWS::ECS::Cluster", 0)
    lambda_only.template.resource_count_is("AWS::EC2::VPC", 0)


def test_default_deploys_both(default: Synth) -> None:
    """compute=both (the default) has the ECS service and the function."""
    default.template.resource_count_is("AWS::ECS::Service", 1)
    default.template.resource_count_is("AWS::Lambda::Function", 1)


def test_outputs_name_cluster_queues_and_producer_policy(any_variant: Synth) -> None:
    """Every variant outputs the cluster id/endpoint, queue and DLQ URLs, producer policy."""
    outputs = set(any_variant.json["Outputs"])
    assert {
        "ClusterIdentifier",
        "ClusterEndpoint",
        "QueueUrl",
        "DlqUrl",
        "ProducerPolicyArn",
    } <= outputs
    assert any_variant.json["Outputs"]["ClusterEndpoint"]["Value"] == {
        "Fn::GetAtt": ["Cluster", "Endpoint"]
    }


def test_every_env_var_is_a_setting(default: Synth) -> None:
    """Each env var handed to the container or the function is a Settings field."""
    fields = {name.upper() for name in Settings.model_fields}
    (container,) = default.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    function = default.one("AWS::Lambda::Function")
    names = set(environment(container)) | set(environment(function))
    assert names >= {"DSQL_ENDPOINT", "QUEUE_URL", "DLQ_URL", "LAMBDA_RESERVE_MS"}
    assert names <= fields | {"AWS_REGION"}
    assert "AWS_REGION" not in environment(function)  # reserved: the runtime sets it


# --- context parsing (no synth) -------------------------------------------------------


def config(**context: Any) -> StackConfig:
    """StackConfig from a bare app's context."""
    return StackConfig.from_context(cdk.App(context=context).node)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"maxConcurrency": "1"}, "maxConcurrency=1"),
        ({"maxConcurrency": 1001}, "maxConcurrency=1001"),
        ({"compute": "ec2"}, "one of fargate, lambda, both"),
        ({"deletionProtection": "maybe"}, "deletionProtection"),
        ({"drainTimeoutS": "40", "stopTimeoutS": "40"}, "drainTimeoutS=40"),
        ({"stopTimeoutS": "121"}, "stopTimeoutS=121"),
        ({"lambdaReserveMs": "30000"}, "lambdaReserveMs=30000"),
        ({"minTasks": "0"}, "minTasks=0"),
        ({"maxRecieveCount": "3"}, "did you mean 'maxReceiveCount'"),
    ],
)
def test_invalid_context_is_refused(context: dict[str, Any], message: str) -> None:
    """Out-of-range, mistyped or misspelt context parameters fail before synth."""
    with pytest.raises(InvalidContext, match=message):
        config(**context)


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
    """`python infra/app.py -c lambdaZip=...` synthesizes the real repo (Dockerfile) there."""
    monkeypatch.setenv("CDK_OUTDIR", str(tmp_path))
    assert infra_app.main(["-c", f"lambdaZip={fixtures_dir / 'lambda.zip'}"]) == 0
    template = json.loads((tmp_path / "DsqlTransfers.template.json").read_text())
    assert "Cluster" in template["Resources"]


def test_app_reports_a_missing_lambda_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing lambdaZip exits 2 naming the fix, instead of a jsii stack trace."""
    monkeypatch.setenv("CDK_OUTDIR", str(tmp_path))
    assert infra_app.main(["-c", f"lambdaZip={tmp_path / 'none.zip'}"]) == 2
    assert "make lambda-zip" in capsys.readouterr().err
