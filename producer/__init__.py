"""The producer side of the transfer processor: a Python client and ``python -m producer``.

``from producer import TransferClient`` is the API for services that send transfers
(see :mod:`producer.client` and :mod:`producer.transfer`); the command line is
:mod:`producer.cli`, one module per command in :mod:`producer.commands`.
"""

from producer.client import TransferClient
from producer.transfer import InvalidTransfer, SendResult, Transfer, TransferNotSent

__all__ = ["InvalidTransfer", "SendResult", "Transfer", "TransferClient", "TransferNotSent"]
