"""``worker.ops.migrate_handler.on_event``: ``migrate`` as a CloudFormation custom resource.

The CDK stack runs it at deploy time (``aws_cdk.custom_resources.Provider``) from the
same zip as the transfer Lambda, as the DSQL ``admin`` role, so no person has to run
migrations by hand and the workers never need DDL rights. Its resource properties
name the IAM roles to map: ``WorkerRoleArns`` to DB_WORKER_ROLE and ``ReaderRoleArns``
to DB_READER_ROLE; any other property change (a ``Version``) just runs it again.

Create and Update migrate (idempotent); Delete does nothing: removing the stack must
never drop a ledger. An exception fails the deployment with its message, which
CloudFormation shows in the stack events.
"""

from __future__ import annotations

from typing import Any

from worker.db import connect
from worker.logs import configure_logging
from worker.ops.migrate import migrate
from worker.ops.schema import Roles
from worker.settings import Settings


def on_event(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    """Handle one custom-resource lifecycle event; returns the Provider's answer."""
    settings = Settings()
    physical = event.get("PhysicalResourceId") or f"dsql-transfers-schema-{settings.db_schema}"
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": physical}
    configure_logging(settings)
    properties = event.get("ResourceProperties", {})
    iam = {
        settings.db_worker_role: list(properties.get("WorkerRoleArns", [])),
        settings.db_reader_role: list(properties.get("ReaderRoleArns", [])),
    }
    with connect(settings) as conn:
        report = migrate(
            conn,
            settings.backend,
            schema=settings.db_schema,
            roles=Roles.from_settings(settings),
            iam=iam,
        )
    return {
        "PhysicalResourceId": physical,
        "Data": {
            "Created": ",".join(report.created),
            "Roles": ",".join(report.roles),
            "Manual": ";".join(report.manual),
        },
    }
