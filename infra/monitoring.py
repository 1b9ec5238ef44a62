"""Alarms, their SNS topic, and the dashboard, all from the same metrics.

The workers' own metrics are CloudWatch Embedded Metric Format lines (worker/metrics.py):
namespace METRICS_NAMESPACE (one per environment, see StackConfig.metrics_namespace),
dimension ``Service`` = ``transfer-worker`` (the container) or ``transfer-lambda``;
counters ``Committed``, ``Rejected``, ``Duplicates``, ``Failed``, ``Malformed``,
``OccRetries`` (sums per interval), distributions ``TransactionMs`` and ``EndToEndMs``
(value arrays, so percentiles work across tasks) and the gauge ``HoldingBack`` (1 while
the container worker holds back because the database is unreachable).

Each alarm's meaning and what to do about it is in docs/operate.md, by construct id.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import findings
from infra.config import StackConfig

CONTAINER_SERVICE = "transfer-worker"
LAMBDA_SERVICE = "transfer-lambda"
"""The ``Service`` dimension each worker kind puts on its metrics."""

OUTCOMES = ("Committed", "Rejected", "Duplicates", "Failed", "Malformed")

FIVE_MINUTES = Duration.minutes(5)
ONE_MINUTE = Duration.minutes(1)


@dataclass(frozen=True)
class Consumer:
    """One kind of worker on the queue, as the alarms and the dashboard see it."""

    label: str
    """Construct-id prefix: ``Worker`` (container) or ``Function``."""
    service: str
    """Its ``Service`` metric dimension."""


CONTAINER = Consumer("Worker", CONTAINER_SERVICE)
FUNCTION = Consumer("Function", LAMBDA_SERVICE)


class Monitoring(Construct):
    """The alarm topic, every alarm, and the dashboard of one stack."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.topic = sns.Topic(self, "AlarmTopic", enforce_ssl=True)
        findings.checkov(
            self.topic,
            "CKV_AWS_26",
            "CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed key",
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarms: dict[str, cw.Alarm] = {}
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=config.resolved_stack_name,
            default_interval=Duration.hours(3),
        )

    # --- metrics ----------------------------------------------------------------------

    def emf(
        self, name: str, consumer: Consumer, statistic: str, period: Duration = FIVE_MINUTES
    ) -> cw.Metric:
        """One of the workers' EMF metrics."""
        return cw.Metric(
            namespace=self.config.metrics_namespace,
            metric_name=name,
            dimensions_map={"Service": consumer.service},
            statistic=statistic,
            period=period,
            # No label: a labelled metric becomes a metric-math query in an alarm.
        )

    # --- alarms -----------------------------------------------------------------------

    def alarm(
        self,
        construct_id: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        description: str,
        comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods: int = 1,
        missing: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING,
    ) -> cw.Alarm:
        """An alarm that notifies the topic when it fires and when it clears."""
        alarm = cw.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=missing,
            alarm_description=f"{description} See docs/operate.md#{construct_id.lower()}.",
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        alarm.add_ok_action(cw_actions.SnsAction(self.topic))
        self.alarms[construct_id] = alarm
        return alarm

    def queue_alarms(self, queue: sqs.IQueue, dlq: sqs.IQueue) -> None:
        """Messages in the DLQ; a queue nobody drains (retention is 4 days)."""
        self.alarm(
            "DlqNotEmpty",
            dlq.metric_approximate_number_of_messages_visible(
                period=ONE_MINUTE, statistic="Maximum"
            ),
            threshold=0,
            description="The DLQ holds messages: malformed input, or transfers that kept "
            "failing for the whole redelivery horizon.",
        )
        self.alarm(
            "OldestMessageTooOld",
            queue.metric_approximate_age_of_oldest_message(period=ONE_MINUTE, statistic="Maximum"),
            threshold=self.config.max_message_age_s,
            evaluation_periods=3,
            description=f"A transfer request has waited over {self.config.max_message_age_s} s.",
        )

    def worker_alarms(self, consumer: Consumer) -> cw.Alarm:
        """Failed, Malformed and TransactionMs p99 of one consumer; returns the Failed
        alarm, which the container's deployments roll back on."""
        config = self.config
        failed = self.alarm(
            f"{consumer.label}Failed",
            self.emf("Failed", consumer, "Sum"),
            threshold=config.failed_threshold,
            description=f"{consumer.service}: transfers failed transiently (conflicts or the "
            "database outlasting the retry budget) and went back to the queue.",
        )
        self.alarm(
            f"{consumer.label}Malformed",
            self.emf("Malformed", consumer, "Sum"),
            threshold=config.malformed_threshold,
            description=f"{consumer.service}: messages that are not transfer requests went "
            "to the DLQ.",
        )
        self.alarm(
            f"{consumer.label}TransactionP99",
            self.emf("TransactionMs", consumer, "p99"),
            threshold=config.transaction_p99_ms,
            evaluation_periods=3,
            description=f"{consumer.service}: p99 transaction time above "
            f"{config.transaction_p99_ms} ms for 15 minutes.",
        )
        return failed

    def container_alarms(self, service: ecs.FargateService, cluster: ecs.ICluster) -> None:
        """The container worker holding back; fewer running tasks than the minimum."""
        config = self.config
        self.alarm(
            "WorkerHoldingBack",
            self.emf("HoldingBack", CONTAINER, "Maximum", ONE_MINUTE),
            threshold=1,
            comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=config.holding_back_minutes,
            description="The container worker cannot reach the database and holds back "
            f"(no receives) for {config.holding_back_minutes} minutes.",
        )
        self.alarm(
            "WorkerTasksBelowMinimum",
            self.running_tasks(service, cluster, "Minimum"),
            threshold=config.min_tasks,
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=5,
            # Container Insights reports every minute; silence means no task is running.
            missing=cw.TreatMissingData.BREACHING,
            description=f"Fewer than {config.min_tasks} worker task(s) ran for 5 minutes.",
        )

    def function_alarms(self, function: lambda_.IFunction) -> None:
        """Invocation errors (a whole batch failed) and throttles."""
        self.alarm(
            "FunctionErrors",
            function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
            threshold=0,
            description="The function raised instead of answering a batch: every record "
            "of it comes back.",
        )
        self.alarm(
            "FunctionThrottles",
            function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
            threshold=0,
            description="Invocations were throttled: reserved concurrency is below what "
            "the event source asks for.",
        )

    @staticmethod
    def running_tasks(
        service: ecs.FargateService, cluster: ecs.ICluster, statistic: str
    ) -> cw.Metric:
        """Container Insights' RunningTaskCount of the worker service."""
        return cw.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": cluster.cluster_name,
                "ServiceName": service.service_name,
            },
            statistic=statistic,
            period=ONE_MINUTE,
        )

    # --- dashboard --------------------------------------------------------------------

    def build_dashboard(
        self,
        *,
        queue: sqs.IQueue,
        dlq: sqs.IQueue,
        consumers: list[Consumer],
        service: ecs.FargateService | None,
        cluster: ecs.ICluster | None,
        function: lambda_.IFunction | None,
    ) -> None:
        """Throughput by outcome, retries, latency percentiles, queue depth and age, DLQ
        depth, and the compute: one row each, then every alarm's state."""
        width = 24 // max(len(consumers), 1)
        dashboard = self.dashboard
        dashboard.add_widgets(
            *[
                cw.GraphWidget(
                    title=f"Outcomes per minute ({c.service})",
                    left=[self.emf(name, c, "Sum", ONE_MINUTE) for name in OUTCOMES],
                    stacked=True,
                    width=width,
                )
                for c in consumers
            ]
        )
        dashboard.add_widgets(
            *[
                cw.GraphWidget(
                    title=f"OCC retries per minute ({c.service})",
                    left=[self.emf("OccRetries", c, "Sum", ONE_MINUTE)],
                    width=width,
                )
                for c in consumers
            ]
        )
        dashboard.add_widgets(
            *[
                cw.GraphWidget(
                    title=f"{name} p50 / p90 / p99 ({c.service})",
                    left=[self.emf(name, c, stat, ONE_MINUTE) for stat in ("p50", "p90", "p99")],
                    width=12,
                )
                for c in consumers
                for name in ("TransactionMs", "EndToEndMs")
            ]
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                left=[
                    queue.metric_approximate_number_of_messages_visible(
                        period=ONE_MINUTE, statistic="Maximum", label="visible"
                    ),
                    queue.metric_approximate_number_of_messages_not_visible(
                        period=ONE_MINUTE, statistic="Maximum", label="in flight"
                    ),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Age of oldest message (s)",
                left=[
                    queue.metric_approximate_age_of_oldest_message(
                        period=ONE_MINUTE, statistic="Maximum", label="oldest"
                    )
                ],
                left_annotations=[
                    cw.HorizontalAnnotation(
                        value=self.config.max_message_age_s, label="alarm threshold"
                    )
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="DLQ depth",
                left=[
                    dlq.metric_approximate_number_of_messages_visible(
                        period=ONE_MINUTE, statistic="Maximum", label="dead letters"
                    )
                ],
                width=8,
            ),
        )
        compute: list[cw.IWidget] = []
        if service is not None and cluster is not None:
            compute.append(
                cw.GraphWidget(
                    title="Worker tasks and holding back",
                    left=[self.running_tasks(service, cluster, "Average")],
                    right=[self.emf("HoldingBack", CONTAINER, "Maximum", ONE_MINUTE)],
                    width=12,
                )
            )
        if function is not None:
            compute.append(
                cw.GraphWidget(
                    title="Function concurrency, errors and throttles",
                    left=[
                        function.metric(
                            "ConcurrentExecutions", period=ONE_MINUTE, statistic="Maximum"
                        )
                    ],
                    right=[
                        function.metric_errors(period=ONE_MINUTE, statistic="Sum"),
                        function.metric_throttles(period=ONE_MINUTE, statistic="Sum"),
                    ],
                    width=12,
                )
            )
        dashboard.add_widgets(*compute)
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24)
        )
