"""A loopback TCP proxy that adds latency and counts client round trips.

Used to answer "how many network round trips does a transfer cost?" by measurement
rather than by reading code: put the proxy between the engine and PostgreSQL, delay
every chunk by ``delay_s`` in each direction, and count the client's *bursts*. A
burst is what the client sends before it next has to wait for the server: with a
one-way delay D no reply can reach the client sooner than 2D after it sent, so a
client send that follows a silence longer than ``burst_gap_s`` (< 2D) starts a new
round trip. Pipelined statements go out back to back and count once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Self

from sandbox.lifecycle import Service


class LatencyProxy(Service):
    """Forward 127.0.0.1:``port`` to ``target``, ``delay_s`` late in each direction."""

    def __init__(
        self,
        target: tuple[str, int],
        delay_s: float = 0.0,
        burst_gap_s: float | None = None,
    ) -> None:
        self.target = target
        self.delay_s = delay_s
        self.burst_gap_s = burst_gap_s if burst_gap_s is not None else max(delay_s, 0.001)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._bursts = 0
        self._last_client_send = 0.0
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._connections = itertools.count(1)

    @property
    def round_trips(self) -> int:
        """Client bursts seen since the last :meth:`reset` (one per round trip)."""
        with self._lock:
            return self._bursts

    def reset(self) -> None:
        """Start counting round trips from zero."""
        with self._lock:
            self._bursts = 0

    def start(self) -> Self:
        """Accept connections in a background thread."""
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop accepting and drop every proxied connection."""
        self._closed.set()
        self._listener.close()
        for sock in list(self._sockets):
            _close_quietly(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _close_quietly(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            connection = next(self._connections)
            _Pipe(self, client, server, connection, from_client=True).start()
            _Pipe(self, server, client, connection, from_client=False).start()

    def observe(self, connection: int, data: bytes, *, from_client: bool) -> None:
        """Called with every chunk read, before it is forwarded; subclasses look here.

        ``connection`` numbers the proxied connections from 1 in accept order. It runs on
        the reading thread of that direction: the chunk goes on only once this returns.
        """

    def _client_sent(self, at: float) -> None:
        with self._lock:
            if at - self._last_client_send > self.burst_gap_s:
                self._bursts += 1
            self._last_client_send = at


class _Pipe:
    """One direction of one connection: read, hold for the delay, write in order."""

    def __init__(
        self,
        proxy: LatencyProxy,
        src: socket.socket,
        dst: socket.socket,
        connection: int,
        *,
        from_client: bool,
    ) -> None:
        self.proxy, self.src, self.dst, self.from_client = proxy, src, dst, from_client
        self.connection = connection
        self._queue: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._eof = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.src.recv(65536)
            except OSError:
                data = b""
            now = time.monotonic()
            if data and self.from_client:
                self.proxy._client_sent(now)
            if data:
                self.proxy.observe(self.connection, data, from_client=self.from_client)
            with self._ready:
                if not data:
                    self._eof = True
                else:
                    heapq.heappush(self._queue, (now + self.proxy.delay_s, next(self._order), data))
                self._ready.notify()
            if not data:
                return

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._eof:
                    self._ready.wait()
                if not self._queue:
                    _close_quietly(self.dst)
                    return
                due, _, data = self._queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._ready.wait(wait)
                    continue
                heapq.heappop(self._queue)
            try:
                self.dst.sendall(data)
            except OSError:
                _close_quietly(self.src)
                return


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
