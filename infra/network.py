"""The Fargate tasks' network: a VPC, where the tasks sit in it, and how they leave it.

``subnets=private`` (the default): tasks in private subnets without a public IP. SQS,
ECR (api and dkr), CloudWatch Logs are reached through interface endpoints and S3 (the
image layers) through the gateway endpoint, so the AWS API traffic never crosses a NAT
gateway. DSQL goes through the NAT gateway(s), or with ``dsqlPrivateLink=true`` through
the cluster's own PrivateLink endpoint, which needs no NAT at all (``natGateways=0``
then makes the subnets isolated).

``subnets=public``: tasks in public subnets with a public IP, no NAT and no endpoints.
The cheapest way to run (interface endpoints cost per hour and AZ); the security group
still admits nothing inbound. For demos, not for money.

Either way the tasks' security group allows egress to TCP 443 (AWS APIs) and 5432
(DSQL) only; DNS to the VPC resolver is not subject to security groups.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dsql as dsql
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import findings
from infra.config import StackConfig, Subnets

HTTPS = 443
POSTGRES = 5432

INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
}
"""What a task calls besides DSQL: the queue, the image registry, the log driver. EMF
metrics travel inside the log stream; task-role credentials come from the ECS agent."""


class WorkerNetwork(Construct):
    """VPC, subnets, endpoints and the tasks' security group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        cluster: dsql.CfnCluster,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.public = config.subnets is Subnets.PUBLIC
        if self.public:
            subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)]
            self.task_subnets = ec2.SubnetType.PUBLIC
        else:
            self.task_subnets = (
                ec2.SubnetType.PRIVATE_WITH_EGRESS
                if config.nat_gateways
                else ec2.SubnetType.PRIVATE_ISOLATED
            )
            subnets = [ec2.SubnetConfiguration(name="private", subnet_type=self.task_subnets)]
            if config.nat_gateways:
                # The NAT gateways need public subnets; nothing else runs there.
                subnets.insert(
                    0, ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)
                )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=removal_policy,
        )
        findings.log_group(flow_logs)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0 if self.public else config.nat_gateways,
            subnet_configuration=subnets,
            # Left as the VPC creates it (no resource uses it): restricting it needs a
            # custom-resource Lambda of its own.
            restrict_default_security_group=False,
            flow_logs={
                # Rejected traffic only: what a tightened egress blocks, at little cost.
                "Rejected": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="dsql-transfers worker tasks: no inbound, egress 443 and 5432 only",
            allow_all_outbound=False,
        )
        # 443 to anywhere: in private subnets the only routes out are the endpoints (and
        # the NAT gateways, if any). 5432 stays inside the VPC when DSQL is reached there.
        dsql_peer = (
            ec2.Peer.ipv4(self.vpc.vpc_cidr_block)
            if config.dsql_private_link
            else ec2.Peer.any_ipv4()
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS), "AWS APIs over TLS"
        )
        self.security_group.add_egress_rule(dsql_peer, ec2.Port.tcp(POSTGRES), "Aurora DSQL")

        self.dsql_endpoint: ec2.InterfaceVpcEndpoint | None = None
        if self.public:
            return
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        # Each endpoint admits the tasks' security group on its port, not the whole VPC.
        for name, service in INTERFACE_ENDPOINTS.items():
            endpoint = self.vpc.add_interface_endpoint(
                name, service=service, subnets=self.task_subnet_selection, open=False
            )
            endpoint.connections.allow_default_port_from(self.security_group)
        if config.dsql_private_link:
            self.dsql_endpoint = self.vpc.add_interface_endpoint(
                "Dsql",
                service=ec2.InterfaceVpcEndpointService(
                    cluster.attr_vpc_endpoint_service_name, POSTGRES
                ),
                private_dns_enabled=True,
                subnets=self.task_subnet_selection,
                open=False,
            )
            self.dsql_endpoint.connections.allow_default_port_from(self.security_group)

    @property
    def task_subnet_selection(self) -> ec2.SubnetSelection:
        """Where the tasks run."""
        return ec2.SubnetSelection(subnet_type=self.task_subnets)
