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
from worker.outcomes import Reason, TransferResult
from worker.settings import Settings, Statements

ONE_WAY_DELAY_S = 0.010


@pytest.fixture(params=list(Statements), ids=[s.value for s in Statements])
def statements(request: pytest.FixtureRequest) -> Statements:
    """Both ways of sending a transfer are measured."""
    return Statements(request.param)


@pytest.fixture
def measured(
    settings: Settings, server_url: str, statements: Statements
) -> Iterator[tuple[TransferEngine, LatencyProxy]]:
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
            yield TransferEngine(pool, statements=statements), proxy


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


REPEATED = req(1, 2, "0.01")

# (name, request for the i-th run, what the result must show, expected round trips):
# one for every outcome, the statement (or the pipeline) deciding in the database.
CASES = [
    ("committed", lambda i: req(1 + i, 50 + i, "0.01"), lambda r: r.committed, 1),
    ("rejected in the transaction", lambda i: req(1 + i, 50 + i, "1000"),
     lambda r: r.reason is Reason.INSUFFICIENT_FUNDS, 1),
    ("rejected by validation", lambda i: req(1 + i, 1 + i, "1"),
     lambda r: r.reason is Reason.SAME_ACCOUNT, 1),
    ("duplicate", lambda _: REPEATED, lambda r: r.duplicate, 1),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "expect", "trips"), CASES, ids=[c[0] for c in CASES])
def test_round_trips_per_outcome(
    measured: tuple[TransferEngine, LatencyProxy],
    name: str,
    make: Callable[[int], TransferRequest],
    expect: Callable[[TransferResult], bool],
    trips: int,
) -> None:
    """Each outcome costs its pinned number of round trips: 1, whatever the outcome."""
    engine, proxy = measured
    engine.apply(REPEATED)  # the earlier delivery the duplicate case repeats

    def once(i: int) -> TransferResult:
        result = engine.apply(make(i))
        assert expect(result), name
        return result

    assert round_trips(proxy, once) == trips
