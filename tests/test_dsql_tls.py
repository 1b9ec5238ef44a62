"""TLS to DSQL with no CA environment at all, as in ``python:3.12-slim`` and on Lambda.

The build machines set ``SSL_CERT_FILE`` and friends globally, which once hid that the
product trusted nothing without them. Every test here runs with those variables
removed: the product must verify DSQL's certificate from what it ships.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import certifi
import psycopg
import pytest

from tests.pgwire import Certificates, FakeLoginServer, make_certificates
from tests.test_dsql_auth import HOST, fake_aws, serve
from worker.db import BUNDLED_CA, connect, ssl_root_cert
from worker.settings import Settings

__all__ = ["fake_aws"]  # the autouse fixture: fake credentials, no AWS config read

CA_VARIABLES = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTPLIB2_CA_CERTS",
    "PGSSLROOTCERT",
    "DSQL_SSLROOTCERT",
)
ROOT = Path(__file__).resolve().parent.parent
AMAZON_ROOTS = ("Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4")


@pytest.fixture(autouse=True)
def no_ca_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the slim image and the Lambda runtime have: no CA variable at all."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def unknown_ca_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeLoginServer, Certificates]]:
    """A server for the DSQL host name whose certificate chains to a CA nobody ships."""
    served = make_certificates(tmp_path / "served", HOST, ca_name="not amazon")
    with serve(served, monkeypatch) as server:
        yield server, served


def subjects(pem: Path) -> list[str]:
    """The common names of the CA certificates in ``pem``, as OpenSSL loads them."""
    context = ssl.create_default_context(cafile=str(pem))
    names = []
    for cert in context.get_ca_certs():
        for rdn in cert["subject"]:
            names += [value for key, value in rdn if key == "commonName"]
    return names


def test_the_default_root_file_is_the_shipped_amazon_roots() -> None:
    """Without DSQL_SSLROOTCERT the DSQL connection trusts the package's own file, which
    OpenSSL loads as Amazon Root CA 1-4 and Starfield Services Root G2."""
    settings = Settings(dsql_endpoint=HOST)
    assert ssl_root_cert(settings) == str(BUNDLED_CA)
    assert BUNDLED_CA.is_file()
    assert "Amazon Root CA 1" in BUNDLED_CA.read_text()
    assert sorted(subjects(BUNDLED_CA)) == [
        *AMAZON_ROOTS,
        "Starfield Services Root Certificate Authority - G2",
    ]


def test_the_shipped_roots_are_byte_for_byte_those_of_mozillas_bundle() -> None:
    """Each certificate in the file is the one certifi (Mozilla's list) carries today, so
    a revoked or replaced root shows up here as a failure, not at a customer."""
    pattern = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
    shipped = pattern.findall(BUNDLED_CA.read_text())
    mozilla = set(pattern.findall(Path(certifi.where()).read_text()))
    assert len(shipped) == 5
    assert all(block in mozilla for block in shipped)


def test_a_server_chaining_to_an_unknown_ca_is_refused_before_any_token_is_sent(
    unknown_ca_server: tuple[FakeLoginServer, Certificates],
) -> None:
    """The default trust refuses a certificate for the right host name from another CA;
    the token never leaves the client."""
    server, _served = unknown_ca_server
    settings = Settings(dsql_endpoint=HOST, connect_timeout_s=5)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(settings)
    assert server.attempts
    assert server.passwords() == []


def test_dsql_sslrootcert_from_the_environment_is_trusted_instead(
    unknown_ca_server: tuple[FakeLoginServer, Certificates],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DSQL_SSLROOTCERT=<path> replaces the shipped roots: the same server is now
    verified, and the login gets as far as the password (which the fake refuses)."""
    server, served = unknown_ca_server
    monkeypatch.setenv("DSQL_SSLROOTCERT", str(served.ca))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(Settings(dsql_endpoint=HOST, connect_timeout_s=5))
    assert len(server.passwords()) == 1


def test_system_trust_with_no_ca_environment_refuses_the_unknown_server(
    unknown_ca_server: tuple[FakeLoginServer, Certificates],
) -> None:
    """DSQL_SSLROOTCERT=system remains available; verification still fails closed."""
    server, _served = unknown_ca_server
    with pytest.raises(psycopg.OperationalError):
        connect(Settings(dsql_endpoint=HOST, dsql_sslrootcert="system", connect_timeout_s=5))
    assert server.passwords() == []


def test_the_built_wheel_ships_the_root_file(tmp_path: Path) -> None:
    """`pip install .` (the image's install step) gets the file: it is in the wheel."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("dsql_transfers-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("worker/certs/amazon-trust-services.pem")
    assert shipped == BUNDLED_CA.read_bytes()
