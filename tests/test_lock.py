"""The two locks agree: requirements.lock (the image's and the Lambda zip's runtime
pins) holds the same versions as uv.lock (the dev and test environment, `make test`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv_versions() -> dict[str, set[str]]:
    """Package -> the versions uv.lock pins (one per marker fork, usually one)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "version" in package:
            versions.setdefault(_normal(package["name"]), set()).add(package["version"])
    return versions


def test_every_runtime_pin_is_the_version_the_tests_run() -> None:
    """Each `name==version` of requirements.lock is uv.lock's version of that package:
    the image and the zip ship what `make test` tested."""
    locked = uv_versions()
    pins = [
        match.groups()
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if (match := PIN.match(line.strip()))
    ]
    assert len(pins) > 10
    mismatched = {
        name: (version, sorted(locked.get(_normal(name), set())))
        for name, version in pins
        if version not in locked.get(_normal(name), set())
    }
    assert mismatched == {}, "run `make relock` (or `make lock`) so the two locks agree"


def test_the_dev_lock_covers_every_dependency_in_pyproject() -> None:
    """Every requirement named in pyproject.toml (runtime and extras) is pinned in uv.lock
    (`uv sync --locked` in the Makefile also refuses a stale lock)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        wanted += extra
    names = {_normal(re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0]) for req in wanted}
    names.discard(_normal(project["name"]))
    assert names - set(uv_versions()) == set()
