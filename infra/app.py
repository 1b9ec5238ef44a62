"""The CDK app: ``python infra/app.py``, ``python -m infra.app`` or ``npx cdk synth`` (from
``infra/``) write the CloudFormation template to ``infra/cdk.out`` (or ``$CDK_OUTDIR``,
which the CDK CLI sets).

Context comes from ``infra/cdk.json`` in every case (the CLI passes it itself; a plain
``python infra/app.py`` reads it here), overridden by ``-c name=value`` arguments, so
both ways synthesize the same template. Needs no AWS credentials and no Docker: the
stack is environment-agnostic and assets are only hashed.

cdk-nag's AwsSolutions pack checks the app on every synth: a finding that is neither
fixed nor accepted with a reason (infra/findings.py) fails the synth, and so the deploy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

INFRA_DIR = Path(__file__).resolve().parent
# `python infra/app.py` and the CDK CLI's `python3 app.py` put infra/ on sys.path, not
# the repository root that holds the `infra` package.
if str(INFRA_DIR.parent) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR.parent))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.config import InvalidContext, StackConfig  # noqa: E402
from infra.stack import TransferStack  # noqa: E402

CDK_JSON = INFRA_DIR / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` block of ``infra/cdk.json``."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def build_app(
    overrides: Mapping[str, Any] | None = None, outdir: str | None = None
) -> tuple[cdk.App, TransferStack]:
    """The app with its one stack, named by the context (``stackName``, or one per
    ``environment``); ``overrides`` win over ``cdk.json``, and the CDK CLI's own context
    (``CDK_CONTEXT_JSON``) wins over both."""
    app = cdk.App(
        context={**cdk_json_context(), **(overrides or {})},
        outdir=outdir or os.environ.get("CDK_OUTDIR") or str(INFRA_DIR / "cdk.out"),
    )
    config = StackConfig.from_context(app.node)
    stack = TransferStack(app, config.resolved_stack_name, config=config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main(argv: Sequence[str] | None = None) -> int:
    """Synthesize; exit 2 with one line on a bad context parameter, 1 when cdk-nag
    reports a finding nobody accepted (the report names each one)."""
    parser = argparse.ArgumentParser(prog="python infra/app.py", description=__doc__)
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a context parameter, like the CDK CLI's -c (repeatable)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.context:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"expected NAME=VALUE, got {item!r}")
        overrides[name] = value
    try:
        app, stack = build_app(overrides)
    except InvalidContext as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        assembly = app.synth()
    except RuntimeError as exc:  # jsii's wrapper of CDK's ValidationFailed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"synthesized {stack.stack_name} into {assembly.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
