"""The name the deployed function is configured with: ``worker.lambda_handler.handler``.

The transport lives in :mod:`worker.transport.lambda_handler`; this module only keeps
the handler's import path stable for the CDK stack and existing deployments.
"""

from worker.transport.lambda_handler import handler

__all__ = ["handler"]
