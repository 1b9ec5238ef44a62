"""Round trips per committed, uncontended transfer, from latency rather than from code.

Transfers run one at a time on one pooled connection that goes through
:class:`sandbox.netproxy.LatencyProxy`. With D added in each direction, every round
trip costs 2D more, so ``(median latency at D - median latency at 0) / 2D`` is the
number of round trips a transfer waits for. The proxy at 0 ms is the baseline (it
adds its own thread hand-offs, which the subtraction removes); the direct latency,
without the proxy, is reported too. The proxy's burst count (client sends after a
silence of more than D/2) is an independent, integer count of the same thing.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from bench.server import BenchServer, proxied
from producer.load import plan_transfers
from sandbox.netproxy import LatencyProxy
from worker.db import create_pool
from worker.engine import TransferEngine
from worker.outcomes import Status
from worker.settings import Settings

ACCOUNTS = 100_000
WARMUP = 20
"""Transfers before measuring: psycopg prepares a statement on its 5th execution."""


@dataclass(frozen=True)
class LatencySample:
    """Sequential transfers at one injected one-way delay."""

    one_way_delay_ms: float
    transfers: int
    median_ms: float
    bursts_median: float | None
    """Client bursts per transfer (None without a delay: bursts need a gap to show)."""


def _sequential(
    settings: Settings, count: int, seed: int, proxy: LatencyProxy | None = None
) -> tuple[list[float], list[int]]:
    """Latency (ms) of ``count`` sequential committed transfers after a warm-up, and
    the proxy's burst count for each."""
    latencies: list[float] = []
    bursts: list[int] = []
    transfers = plan_transfers(WARMUP + count, ACCOUNTS, random.Random(seed))
    with create_pool(settings, min_size=1, max_size=1, name="rtt") as pool:
        pool.wait()
        engine = TransferEngine(pool)
        for index, request in enumerate(transfers):
            if proxy is not None:
                proxy.reset()
            started = time.perf_counter()
            result = engine.apply(request)
            elapsed = (time.perf_counter() - started) * 1000
            if result.status is not Status.COMMITTED:
                raise RuntimeError(f"transfer not committed: {result}")
            if index >= WARMUP:
                latencies.append(elapsed)
                bursts.append(proxy.round_trips if proxy is not None else 0)
    return latencies, bursts


def through_proxy(server: BenchServer, delay_s: float, count: int, seed: int) -> LatencySample:
    """``count`` transfers through a proxy adding ``delay_s`` each way."""
    endpoint = server.endpoint()
    gap = delay_s / 2 if delay_s else None
    with LatencyProxy((endpoint.host, endpoint.port), delay_s, burst_gap_s=gap) as proxy:
        settings = server.settings(proxied(endpoint, proxy.port))
        latencies, bursts = _sequential(settings, count, seed, proxy)
    return LatencySample(
        one_way_delay_ms=delay_s * 1000,
        transfers=count,
        median_ms=statistics.median(latencies),
        bursts_median=statistics.median(bursts) if delay_s else None,
    )


def run_round_trips(
    server: BenchServer, delays_s: tuple[float, ...], count: int
) -> dict[str, object]:
    """Median latencies direct, through the proxy at 0 ms and at each delay, and the
    round trips they imply.

    Per delay, ``(median(D) - median(0)) / 2D`` slightly overstates the count: the
    proxy's timed waits overshoot each hop by a roughly constant ~0.1-0.2 ms, which is
    not part of the transfer. The least-squares slope of median latency over 2D across
    the delays cancels that constant and is the reported ``round_trips``; the per-delay
    ratios and the proxy's integer burst count are reported beside it.
    """
    direct = statistics.median(_sequential(server.settings(), count, seed=1)[0])
    baseline = through_proxy(server, 0.0, count, seed=2)
    samples = [through_proxy(server, d, count, seed=3 + i) for i, d in enumerate(delays_s)]
    xs = [2 * s.one_way_delay_ms for s in samples]
    ys = [s.median_ms for s in samples]
    slope = _slope(xs, ys) if len(samples) > 1 else (ys[0] - baseline.median_ms) / xs[0]
    return {
        "transfers_per_delay": count,
        "median_ms_direct": direct,
        "median_ms_proxy_0ms": baseline.median_ms,
        "samples": [
            {
                "one_way_delay_ms": s.one_way_delay_ms,
                "median_ms": s.median_ms,
                "round_trips": (s.median_ms - baseline.median_ms) / (2 * s.one_way_delay_ms),
                "bursts_median": s.bursts_median,
            }
            for s in samples
        ],
        "round_trips": slope,
        "overhead_ms_per_round_trip": (
            statistics.fmean(ys) - baseline.median_ms - slope * statistics.fmean(xs)
        )
        / max(round(slope), 1),
        "bursts_median": max(s.bursts_median or 0 for s in samples),
    }


def _slope(xs: list[float], ys: list[float]) -> float:
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
