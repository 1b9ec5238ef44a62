"""A loopback proxy that logs the PostgreSQL protocol messages a client sends.

It answers "what exactly goes over the wire to the database?" by measurement: put it
between a client and PostgreSQL (it is a :class:`~sandbox.netproxy.LatencyProxy`
without delay) and it decodes the client's frontend messages (``Query``, ``Parse``
with the statement name and SQL, ``Bind``, ``Describe``, ``Execute``, ``Sync``,
``Close``, ``Terminate``, ...) and, from the server, only the errors
(``ErrorResponse`` with its SQLSTATE), in the order they were read.

Plain-text connections only: after the server accepts an ``SSLRequest`` the rest of
that connection is opaque and is logged as one ``Encrypted`` event. Message bodies are
decoded no further than a reader needs: parameter *values* of ``Bind`` are counted,
never kept, and a password message is recorded by its kind alone.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sandbox.netproxy import LatencyProxy

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608

FRONTEND_KINDS = {
    b"Q": "Query",
    b"P": "Parse",
    b"B": "Bind",
    b"D": "Describe",
    b"E": "Execute",
    b"S": "Sync",
    b"H": "Flush",
    b"C": "Close",
    b"X": "Terminate",
    b"p": "Password",
    b"d": "CopyData",
    b"c": "CopyDone",
    b"f": "CopyFail",
    b"F": "FunctionCall",
}


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message, decoded as far as this log cares.

    ``name`` is the prepared statement a ``Parse``, ``Bind``, ``Describe S`` or
    ``Close S`` refers to (``""`` is the unnamed statement); ``target`` is ``"S"``
    (statement) or ``"P"`` (portal) for ``Describe`` and ``Close``.
    """

    kind: str
    connection: int
    from_client: bool = True
    name: str = ""
    portal: str = ""
    sql: str | None = None
    params: int | None = None
    target: str = ""
    sqlstate: str = ""
    text: str = ""
    startup: tuple[tuple[str, str], ...] = ()


@dataclass
class _Stream:
    """Bytes of one direction not yet decoded into whole messages."""

    buffer: bytearray = field(default_factory=bytearray)
    startup: bool = True


@dataclass
class _Connection:
    client: _Stream = field(default_factory=_Stream)
    server: _Stream = field(default_factory=_Stream)
    pending_encryption_answers: int = 0
    encrypted: bool = False


class WireLog(LatencyProxy):
    """Forward 127.0.0.1:``port`` to ``target`` and log every message on the way.

    ``messages()`` returns what was logged since the last :meth:`reset`, in the
    order the proxy read it; with one client connection that is the client's order.
    """

    def __init__(self, target: tuple[str, int], delay_s: float = 0.0) -> None:
        super().__init__(target, delay_s)
        self._log_lock = threading.Lock()
        self._connections_seen: dict[int, _Connection] = {}
        self._log: list[Message] = []
        self._prepared: dict[tuple[int, str], str] = {}

    def messages(self) -> list[Message]:
        """Everything logged since the last :meth:`reset` (or since the start)."""
        with self._log_lock:
            return list(self._log)

    def prepared(self) -> dict[tuple[int, str], str]:
        """(connection, name) -> SQL of every named statement the client prepared and
        has not closed, since the proxy started (:meth:`reset` keeps them)."""
        with self._log_lock:
            return dict(self._prepared)

    def reset(self) -> None:
        """Forget what was logged (and restart the round-trip count)."""
        super().reset()
        with self._log_lock:
            self._log.clear()

    def observe(self, connection: int, data: bytes, *, from_client: bool) -> None:
        with self._log_lock:
            state = self._connections_seen.setdefault(connection, _Connection())
            if state.encrypted:
                return
            stream = state.client if from_client else state.server
            stream.buffer += data
            decode = _decode_client if from_client else _decode_server
            for message in decode(state, stream, connection):
                self._log.append(message)
                if message.kind == "Parse" and message.name and message.sql is not None:
                    self._prepared[(connection, message.name)] = message.sql
                elif message.kind == "Close" and message.target == "S":
                    self._prepared.pop((connection, message.name), None)


def _decode_client(state: _Connection, stream: _Stream, connection: int) -> Iterator[Message]:
    buf = stream.buffer
    while True:
        if stream.startup:
            if len(buf) < 8:
                return
            (length,) = struct.unpack_from("!i", buf, 0)
            if len(buf) < length:
                return
            body = bytes(buf[4:length])
            del buf[:length]
            (code,) = struct.unpack_from("!i", body, 0)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                state.pending_encryption_answers += 1
                kind = "SSLRequest" if code == SSL_REQUEST else "GSSENCRequest"
                yield Message(kind, connection)
            elif code == CANCEL_REQUEST:
                yield Message("CancelRequest", connection)
            else:
                stream.startup = False
                yield Message("StartupMessage", connection, startup=_startup_pairs(body[4:]))
            continue
        message = _next_typed(buf)
        if message is None:
            return
        tag, body = message
        yield _frontend(tag, body, connection)


def _decode_server(state: _Connection, stream: _Stream, connection: int) -> Iterator[Message]:
    buf = stream.buffer
    while True:
        if state.pending_encryption_answers:
            if not buf:
                return
            answer = bytes(buf[:1])
            del buf[:1]
            state.pending_encryption_answers -= 1
            if answer in (b"S", b"G"):
                state.encrypted = True
                yield Message("Encrypted", connection, from_client=False)
                return
            continue
        message = _next_typed(buf)
        if message is None:
            return
        tag, body = message
        if tag == b"E":
            fields = _error_fields(body)
            yield Message(
                "ErrorResponse",
                connection,
                from_client=False,
                sqlstate=fields.get("C", ""),
                text=fields.get("M", ""),
            )


def _next_typed(buf: bytearray) -> tuple[bytes, bytes] | None:
    """Cut one ``type byte + int32 length + body`` message off ``buf``, if whole."""
    if len(buf) < 5:
        return None
    (length,) = struct.unpack_from("!i", buf, 1)
    if len(buf) < 1 + length:
        return None
    tag, body = bytes(buf[:1]), bytes(buf[5 : 1 + length])
    del buf[: 1 + length]
    return tag, body


class _Reader:
    """Sequential reads of a message body."""

    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def cstring(self) -> str:
        end = self.body.index(b"\0", self.at)
        text = self.body[self.at : end].decode("utf-8", "replace")
        self.at = end + 1
        return text

    def int16(self) -> int:
        (value,) = struct.unpack_from("!h", self.body, self.at)
        self.at += 2
        return int(value)

    def int32(self) -> int:
        (value,) = struct.unpack_from("!i", self.body, self.at)
        self.at += 4
        return int(value)

    def byte(self) -> str:
        value = chr(self.body[self.at])
        self.at += 1
        return value


def _frontend(tag: bytes, body: bytes, connection: int) -> Message:
    kind = FRONTEND_KINDS.get(tag, f"Unknown({tag!r})")
    read = _Reader(body)
    decoders: dict[str, Callable[[], Message]] = {
        "Query": lambda: Message(kind, connection, sql=read.cstring()),
        "Parse": lambda: Message(kind, connection, name=read.cstring(), sql=read.cstring()),
        "Bind": lambda: _bind(read, connection),
        "Describe": lambda: _described(kind, read, connection),
        "Close": lambda: _described(kind, read, connection),
        "Execute": lambda: Message(kind, connection, portal=read.cstring()),
    }
    decoder = decoders.get(kind)
    return decoder() if decoder else Message(kind, connection)


def _bind(read: _Reader, connection: int) -> Message:
    portal, name = read.cstring(), read.cstring()
    for _ in range(read.int16()):  # parameter format codes
        read.int16()
    params = read.int16()
    return Message("Bind", connection, name=name, portal=portal, params=params)


def _described(kind: str, read: _Reader, connection: int) -> Message:
    target = read.byte()
    name = read.cstring()
    if target == "S":
        return Message(kind, connection, name=name, target=target)
    return Message(kind, connection, portal=name, target=target)


def _startup_pairs(body: bytes) -> tuple[tuple[str, str], ...]:
    parts = body.split(b"\0")
    pairs = []
    for key, value in zip(parts[0::2], parts[1::2], strict=False):
        if not key:
            break
        pairs.append((key.decode(), value.decode("utf-8", "replace")))
    return tuple(pairs)


def _error_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    read = _Reader(body)
    while read.at < len(body) and body[read.at] != 0:
        code = read.byte()
        fields[code] = read.cstring()
    return fields
