"""Add sha256 hashes to requirements.lock: ``python -m sandbox.lock_hashes``.

The image (``pip install --require-hashes``) and the Lambda zip (pip switches to
hash-checking mode by itself when a requirement carries a hash) then install only the
exact files these hashes name: a wheel replaced on the index fails the build instead of
shipping.

Which files? Every wheel pip would pick for each place the lock is installed: CPython
3.12 on x86_64 and aarch64, under the Lambda runtime's glibc (2.34) and under the
image's (Debian trixie, 2.41), as pip itself ranks the manylinux tags. pip downloads
each target's wheels (``--no-deps``, binary only) into ``build/lock-wheels/``; the
hashes of all of them, per pin, are written back. Run by ``make lock`` after it pins
the versions; it needs the package index, nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
WHEELS = ROOT / "build" / "lock-wheels"

PYTHON_VERSION = "3.12"
MACHINES = ("x86_64", "aarch64")
GLIBC_MINORS = {"lambda": 34, "image": 41}
"""Where the lock is installed -> the glibc minor version there (2.34: Amazon Linux 2023,
the python3.12 runtime; 2.41: Debian trixie, python:3.12-slim)."""

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


class LockError(RuntimeError):
    """The lock has a line that is not an exact pin, or pip could not fetch a wheel."""


def pins(text: str) -> dict[str, str]:
    """Normalized name -> version of every pin in a lock (with or without hashes)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "--hash")):
            continue
        match = PIN.match(stripped)
        if not match:
            raise LockError(f"not an exact pin: {line!r}")
        found[canonicalize_name(match[1])] = match[2]
    return found


def header(text: str) -> str:
    """The lock's leading comment block."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def platform_tags(machine: str, glibc_minor: int) -> list[str]:
    """pip ``--platform`` values, newest first, as pip on that system would rank them."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def download(requirements: Path, machine: str, glibc_minor: int, dest: Path) -> None:
    """pip download the wheels the lock needs on one target into ``dest``."""
    platforms = [o for tag in platform_tags(machine, glibc_minor) for o in ("--platform", tag)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        *platforms,
        "--dest",
        str(dest),
        "--requirement",
        str(requirements),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our argv
    if done.returncode != 0:
        raise LockError(f"pip download failed for {machine} glibc 2.{glibc_minor}:\n{done.stderr}")


def hashes_by_name(directories: Sequence[Path], wanted: dict[str, str]) -> dict[str, set[str]]:
    """sha256 of every wheel of a pinned version found in ``directories``, per name."""
    found: dict[str, set[str]] = defaultdict(set)
    for directory in directories:
        for wheel in directory.glob("*.whl"):
            name, version, _build, _tags = parse_wheel_filename(wheel.name)
            if wanted.get(name) == str(version):
                found[name].add(hashlib.sha256(wheel.read_bytes()).hexdigest())
    return found


def render(
    head: str, versions: dict[str, str], names: dict[str, str], hashes: dict[str, set[str]]
) -> str:
    """The lock text: the header, then each pin with its hashes, one per line."""
    missing = sorted(set(versions) - set(hashes))
    if missing:
        raise LockError(f"no wheel found for {', '.join(missing)}")
    blocks = []
    for key in sorted(versions, key=lambda k: names[k].lower()):
        lines = [f"{names[key]}=={versions[key]}"]
        lines += [f"--hash=sha256:{digest}" for digest in sorted(hashes[key])]
        blocks.append(" \\\n    ".join(lines))
    return head + "\n" + "\n".join(blocks) + "\n"


def relock(lock: Path = LOCK, wheels: Path = WHEELS) -> Path:
    """Rewrite ``lock`` with the hashes of every wheel its pins resolve to."""
    text = lock.read_text()
    versions = pins(text)
    names: dict[str, str] = {
        str(canonicalize_name(m[1])): m[1]
        for line in text.splitlines()
        if (m := PIN.match(line.strip()))
    }
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "pins.txt"
        plain.write_text("".join(f"{names[k]}=={v}\n" for k, v in versions.items()))
        directories = []
        for machine in MACHINES:
            for target, minor in GLIBC_MINORS.items():
                dest = wheels / f"{target}-{machine}"
                dest.mkdir(parents=True, exist_ok=True)
                download(plain, machine, minor, dest)
                directories.append(dest)
    lock.write_text(render(header(text), versions, names, hashes_by_name(directories, versions)))
    return lock


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox.lock_hashes [--lock PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.lock_hashes", description=__doc__)
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    args = parser.parse_args(argv)
    try:
        path = relock(args.lock, args.wheels)
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {len(pins(path.read_text()))} pins with sha256 hashes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
