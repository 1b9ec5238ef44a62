"""Accepted linter findings, each with its reason, next to the resource it concerns.

Three tools read the synthesized app: cdk-nag's AwsSolutions pack (an acknowledgment on
the construct and everything under it), checkov (``Metadata.checkov.skip`` on the
CloudFormation resource) and cfn-lint (``Metadata.cfn-lint.config.ignore_checks``).
Everything they report that is not fixed is accepted here, never in a tool's config
file, so a reader sees the reason where the resource is built.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, CfnResource, Validations
from constructs import IConstruct

NAG_PACK = "AwsSolutions"


def nag(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept cdk-nag ``rule`` (``AwsSolutions-IAM5[Resource::*]``) on ``construct``."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{NAG_PACK}::{rule}", reason=reason))


def checkov(construct: IConstruct, check: str, reason: str) -> None:
    """Skip checkov ``check`` (``CKV_AWS_117``) on ``construct``'s CloudFormation resource."""
    resource = _resource(construct)
    skips: list[dict[str, str]] = list((resource.get_metadata("checkov") or {}).get("skip", []))
    skips.append({"id": check, "comment": reason})
    resource.add_metadata("checkov", {"skip": skips})


def cfn_lint(construct: IConstruct, rule: str, reason: str) -> None:
    """Ignore cfn-lint ``rule`` (``W3005``) on ``construct``'s resource; the reason stays
    here, as cfn-lint's metadata has no field for it."""
    del reason  # documented at the call site, which is the point of passing it
    resource = _resource(construct)
    current: dict[str, Any] = resource.get_metadata("cfn-lint") or {}
    ignored = [*current.get("config", {}).get("ignore_checks", []), rule]
    resource.add_metadata("cfn-lint", {"config": {"ignore_checks": ignored}})


def _resource(construct: IConstruct) -> CfnResource:
    """The construct itself if it is a CloudFormation resource, else its default child."""
    if isinstance(construct, CfnResource):
        return construct
    child = construct.node.default_child
    if not isinstance(child, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource")
    return child


def log_group(group: IConstruct) -> None:
    """The finding every log group of this stack shares."""
    checkov(group, "CKV_AWS_158", "CloudWatch Logs encrypts at rest; the logs hold no secrets")
