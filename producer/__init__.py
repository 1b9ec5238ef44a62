"""The producer side of the transfer processor: a Python client and ``python -m producer``.

``from producer import TransferClient`` is the API for services that send transfers
(see :mod:`producer.client`); the command line lives in :mod:`producer.cli`.
"""

from producer.client import (
    InvalidTransfer,
    SendResult,
    Transfer,
    TransferClient,
    TransferNotSent,
)

__all__ = ["InvalidTransfer", "SendResult", "Transfer", "TransferClient", "TransferNotSent"]
