"""A fake PostgreSQL server that records how a client tries to log in, then refuses it.

Just enough of the wire protocol for libpq to get as far as sending its password:
answer the SSLRequest with ``S`` and complete a TLS handshake with a certificate made
by :func:`make_certificates`, read the StartupMessage, ask for a cleartext password,
record it, and reply ``28P01 password authentication failed``. That lets a test see
the IAM token the real connection code sends, without a network or an AWS account.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
AUTH_CLEARTEXT_PASSWORD = 3


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA a client trusts, and the server's chain and key."""

    ca: Path
    chain: Path
    key: Path


def make_certificates(directory: Path, hostname: str, *, ca_name: str = "test CA") -> Certificates:
    """A fresh CA and a server certificate for ``hostname`` signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    certs = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    certs.ca.write_bytes(ca_cert.public_bytes(pem))
    certs.chain.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    certs.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certs


@dataclass
class LoginAttempt:
    """What the server saw of one client connection."""

    ssl_requested: bool = False
    tls_established: bool = False
    server_name: str | None = None
    """The SNI host name the client sent in its TLS ClientHello."""
    startup: dict[str, str] | None = None
    password: str | None = None
    error: str | None = None


class FakeLoginServer:
    """Listens on 127.0.0.1; every connection is recorded in :attr:`attempts` and refused."""

    def __init__(self, certs: Certificates) -> None:
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(certs.chain, certs.key)
        self._tls.sni_callback = self._record_sni
        self._local = threading.local()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.attempts: list[LoginAttempt] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-pg", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()

    def passwords(self) -> list[str]:
        """Passwords received so far, in arrival order."""
        with self._lock:
            return [a.password for a in self.attempts if a.password is not None]

    def wait_for_passwords(self, count: int, timeout: float = 10.0) -> list[str]:
        """Block until ``count`` passwords arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.passwords()
            if len(received) >= count:
                return received
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} login attempts, got {len(received)}")
            time.sleep(0.01)

    def logins(self) -> list[LoginAttempt]:
        """Attempts that got as far as sending a password."""
        with self._lock:
            return [a for a in self.attempts if a.password is not None]

    # --- the server --------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            attempt = LoginAttempt()
            with self._lock:
                self.attempts.append(attempt)
            threading.Thread(
                target=self._handle, args=(client, attempt), name="fake-pg-conn", daemon=True
            ).start()

    def _record_sni(self, _sock: ssl.SSLObject, name: str, _ctx: ssl.SSLContext) -> None:
        self._local.server_name = name

    def _handle(self, client: socket.socket, attempt: LoginAttempt) -> None:
        client.settimeout(10)
        conn: socket.socket = client
        try:
            length, code = struct.unpack("!ii", _read(conn, 8))
            if code == GSSENC_REQUEST:
                conn.sendall(b"N")
                length, code = struct.unpack("!ii", _read(conn, 8))
            if code == SSL_REQUEST:
                attempt.ssl_requested = True
                conn.sendall(b"S")
                self._local.server_name = None
                conn = self._tls.wrap_socket(client, server_side=True)
                attempt.tls_established = True
                attempt.server_name = self._local.server_name
                (length,) = struct.unpack("!i", _read(conn, 4))
                body = _read(conn, length - 4)
            else:
                body = struct.pack("!i", code) + _read(conn, length - 8)
            attempt.startup = _startup_parameters(body[4:])
            conn.sendall(b"R" + struct.pack("!ii", 8, AUTH_CLEARTEXT_PASSWORD))
            kind = _read(conn, 1)
            (length,) = struct.unpack("!i", _read(conn, 4))
            payload = _read(conn, length - 4)
            if kind == b"p":
                attempt.password = payload.rstrip(b"\0").decode()
            fields = b"".join(
                tag + value.encode() + b"\0"
                for tag, value in (
                    (b"S", "FATAL"),
                    (b"V", "FATAL"),
                    (b"C", "28P01"),
                    (b"M", "password authentication failed"),
                )
            )
            conn.sendall(b"E" + struct.pack("!i", 4 + len(fields) + 1) + fields + b"\0")
        except (OSError, ValueError, struct.error) as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection")
        data += chunk
    return data


def _startup_parameters(data: bytes) -> dict[str, str]:
    parts = data.split(b"\0")
    pairs = [p.decode() for p in parts[: len(parts) - len(parts) % 2]]
    return {k: v for k, v in zip(pairs[::2], pairs[1::2], strict=True) if k}
