"""Round trips per transfer, measured on the wire through a latency-injecting proxy.

On DSQL every round trip costs a millisecond or more, so the count is part of the
engine's contract. The proxy delays each direction by 10 ms and counts the client's
bursts (see sandbox/netproxy.py): pipelined statements count once.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from producer.accounts import reset_accounts
from sandbox.netproxy import LatencyProxy
from worker.contract import TransferRequest
from worker.db import create_pool
from worker.engine import TransferEngine
from worker.outcomes import Reason, Status, TransferResult
from worker.settings import Settings

ONE_WAY_DELAY_S = 0.010


@pytest.fixture
def measured(settings: Settings, server_url: str) -> Iterator[tuple[TransferEngine, LatencyProxy]]:
    """An engine whose single pooled connection goes through the latency proxy."""
    reset_accounts(settings, 100, Decimal(100))
    assert settings.database_url is not None
    info = conninfo_to_dict(settings.database_url.get_secret_value())
    target = (str(info["host"]), int(str(info["port"])))
    with LatencyProxy(target, ONE_WAY_DELAY_S, burst_gap_s=ONE_WAY_DELAY_S / 2) as proxy:
        url = make_conninfo(**{**info, "host": "127.0.0.1", "port": str(proxy.port)})  # type: ignore[arg-type]
        proxied = settings.model_copy(update={"database_url": SecretStr(url)})
        with create_pool(proxied, min_size=1, max_size=1) as pool:
            pool.wait()
            yield TransferEngine(pool), proxy


def round_trips(proxy: LatencyProxy, action: Callable[[int], TransferResult], n: int = 5) -> int:
    """Median bursts over ``n`` runs of ``action(i)``."""
    counts = []
    for i in range(n):
        proxy.reset()
        action(i)
        counts.append(proxy.round_trips)
    return int(statistics.median(counts))


def req(
    payer: int, payee: int, amount: str, transfer_id: uuid.UUID | None = None
) -> TransferRequest:
    return TransferRequest(
        transfer_id=transfer_id or uuid.uuid4(),
        payer_id=payer,
        payee_id=payee,
        amount=Decimal(amount),
    )


def test_committed_transfer_takes_two_round_trips(
    measured: tuple[TransferEngine, LatencyProxy],
) -> None:
    """BEGIN+read+debit+credit, then insert+COMMIT: two round trips, uncontended."""
    engine, proxy = measured

    def commit(i: int) -> TransferResult:
        result = engine.apply(req(1 + i, 50 + i, "0.01"))
        assert result.status is Status.COMMITTED
        return result

    assert round_trips(proxy, commit) == 2


def test_in_transaction_rejection_takes_two_round_trips(
    measured: tuple[TransferEngine, LatencyProxy],
) -> None:
    """Insufficient funds: the ROLLBACK travels with the rejection's insert."""
    engine, proxy = measured

    def reject(i: int) -> TransferResult:
        result = engine.apply(req(1 + i, 50 + i, "1000"))
        assert result.reason is Reason.INSUFFICIENT_FUNDS
        return result

    assert round_trips(proxy, reject) == 2


def test_invalid_request_is_recorded_in_one_round_trip(
    measured: tuple[TransferEngine, LatencyProxy],
) -> None:
    """A request rejected by validation never touches accounts: one round trip."""
    engine, proxy = measured

    def invalid(i: int) -> TransferResult:
        result = engine.apply(req(1 + i, 1 + i, "1"))
        assert result.reason is Reason.SAME_ACCOUNT
        return result

    assert round_trips(proxy, invalid) == 1


def test_duplicate_delivery_takes_two_round_trips(
    measured: tuple[TransferEngine, LatencyProxy],
) -> None:
    """A repeat finds the earlier result in round trip 1 and rolls back in round trip 2."""
    engine, proxy = measured
    first = req(1, 2, "0.01")
    engine.apply(first)

    def repeat(_: int) -> TransferResult:
        result = engine.apply(first)
        assert result.duplicate
        return result

    assert round_trips(proxy, repeat) == 2
