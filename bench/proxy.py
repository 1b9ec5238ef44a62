""":class:`sandbox.netproxy.LatencyProxy` in a process of its own.

The proxy forwards every chunk through Python threads. Run inside the bench process
it would compete for the GIL with the engine's own threads (and not with pgbench,
a separate C program), which would tilt a proxied engine-vs-pgbench comparison;
in its own process it costs both clients the same.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Self

from sandbox.netproxy import LatencyProxy


class ProxyProcess:
    """A latency proxy to ``target`` in a child process; ``port`` is where it listens."""

    def __init__(self, target: tuple[str, int], delay_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, target, delay_s), name="latency-proxy", daemon=True
        )
        self.port = 0

    def __enter__(self) -> Self:
        self._process.start()
        self.port = int(self._ask("port"))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ask("close")
        self._process.join(10)

    def reset(self) -> None:
        """Start counting round trips (client bursts) from zero."""
        self._ask("reset")

    @property
    def round_trips(self) -> int:
        """Client bursts since the last reset, over all connections."""
        return int(self._ask("round_trips"))

    def _ask(self, command: str) -> str:
        self._conn.send(command)
        answer: str = self._conn.recv()
        return answer


def _serve(conn: Connection, target: tuple[str, int], delay_s: float) -> None:
    with LatencyProxy(target, delay_s, burst_gap_s=delay_s / 2) as proxy:
        while True:
            command = conn.recv()
            if command == "port":
                conn.send(str(proxy.port))
            elif command == "reset":
                proxy.reset()
                conn.send("ok")
            elif command == "round_trips":
                conn.send(str(proxy.round_trips))
            else:
                conn.send("ok")
                return
