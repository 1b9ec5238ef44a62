"""An embedded PostgreSQL 16 for tests, the demo and benchmarks: no Docker, no service.

Uses the server binaries shipped in the ``pgserver`` wheel, but drives them directly
(rather than through ``pgserver.get_server``) because the fault suite needs what that
API hides: a fixed TCP port that survives restarts, ``fast`` and ``immediate``
shutdowns, and ``pgbench``.

PostgreSQL refuses to run as root; when we are root (CI is), the cluster runs as an
unprivileged ``pgserver`` user, as ``pgserver`` itself does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Literal, Self

from sandbox.lifecycle import Service

with warnings.catch_warnings():
    # pgserver resolves a runtime directory at import and warns when XDG_RUNTIME_DIR
    # is unset (containers, CI); we never use that directory.
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH

ShutdownMode = Literal["smart", "fast", "immediate"]

# Durability settings are off because nothing here survives the machine anyway; the
# transactional semantics the tests check are unchanged.
SERVER_OPTIONS = (
    "-c fsync=off -c full_page_writes=off -c max_connections=300 "
    "-c shared_buffers=128MB -c log_min_messages=warning"
)


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres(Service):
    """A throwaway PostgreSQL cluster listening on 127.0.0.1:``port``."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="embedded-pg-"))
        self.port = port or free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "pgserver"
            _ensure_unprivileged_user(self._user)

    @property
    def url(self) -> str:
        """libpq URL of the ``postgres`` database as superuser ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def bin(self, name: str) -> str:
        """Path of a bundled PostgreSQL program (psql, pgbench, ...)."""
        return str(POSTGRES_BIN_PATH / name)

    def start(self) -> Self:
        """initdb on first use, then start and wait until connections are accepted."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._prepare_dir()
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--no-sync")  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k '' {SERVER_OPTIONS}"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options,
                  "-l", str(self.data_dir / "server.log"), "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server; ``immediate`` is a crash (recovery runs on next start)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: ShutdownMode = "fast", downtime_s: float = 0.0) -> None:
        """Stop with ``mode``, stay down for ``downtime_s``, start again on the same port."""
        self.stop(mode)
        time.sleep(downtime_s)
        self.start()

    def close(self) -> None:
        """Stop the server and delete its data directory if we created it."""
        self.stop("immediate")
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            shutil.chown(self.data_dir, self._user, self._user)
            # The unprivileged user must reach the directory and the binaries.
            for path in (self.data_dir, POSTGRES_BIN_PATH):
                for parent in path.parents:
                    if parent == Path("/"):
                        break
                    parent.chmod(parent.stat().st_mode | 0o055)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(  # noqa: S603 - fixed program from the wheel, our arguments
            [self.bin(program), *args],
            user=self._user,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        if check and result.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {result.stderr.strip()}\n{tail}")


def _ensure_unprivileged_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "-M", name], check=True)  # noqa: S603, S607


def main() -> None:
    """``python -m sandbox.postgres``: run a server until interrupted (for manual use)."""
    with EmbeddedPostgres() as pg:
        print(f"DATABASE_URL={pg.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
