"""The Lambda handler's cold import, in fresh interpreters.

``import worker.lambda_handler`` is timed from the outside, median of several runs,
against a bare ``-c pass`` (the interpreter's own start-up, which Lambda pays too but
this code cannot change). Three conditions:

- **packaged**: the deployment zip itself (``sandbox.lambda_zip``, built into a
  temporary directory from the wheel cache), unzipped and imported by ``python3.12 -I
  -S`` with the task root first on ``sys.path`` and bytecode writing off, as on
  Lambda's read-only ``/var/task``; skipped when no python3.12 or wheel is at hand;
- **this virtualenv**: Python 3.11 with the dependencies' bytecode cached by pip (the
  project's own modules are compiled on the fly when ``PYTHONDONTWRITEBYTECODE`` is
  set, as on the build machine);
- **no bytecode**: ``PYTHONPYCACHEPREFIX`` pointing at an empty directory, with
  writing disabled, so every module is compiled from source on every start: what a zip
  without ``.pyc`` files costs on a read-only ``/var/task``.

``python -X importtime`` gives the breakdown by top-level dependency (it adds its own
overhead, so its total is larger than the timed one).

Worker RSS is sampled by :class:`bench.processes.RssSampler` during the pipeline runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import ROOT

MODULE = "worker.lambda_handler"


def _time_python(
    code: str, env: dict[str, str], python: Sequence[str] = (sys.executable,)
) -> float:
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 - a probed interpreter, fixed arguments
        [*python, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True
    )
    return (time.perf_counter() - started) * 1000


def packaged_cold_import(repeats: int) -> dict[str, Any]:
    """The deployment zip's handler import under python3.12, as Lambda runs it."""
    from sandbox import lambda_zip

    python = lambda_zip.find_python312()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if python is None or arch is None:
        return {"skipped": "no python3.12 on this machine (LAMBDA_PYTHON)"}
    with tempfile.TemporaryDirectory(prefix="bench-zip-") as tmp:
        try:
            archive = lambda_zip.build(arch, Path(tmp) / "lambda.zip")
        except (lambda_zip.BuildFailed, subprocess.CalledProcessError, OSError) as exc:
            return {"skipped": f"zip build failed: {exc}"}
        task = Path(tmp) / "task"
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(task)
            pyc_files = sum(1 for name in zipped.namelist() if name.endswith(".pyc"))
        env = {**_clean_env(), "PYTHONDONTWRITEBYTECODE": "1"}
        isolated = (python, "-I", "-S")
        code = f"import sys; sys.path.insert(0, {str(task)!r}); import {MODULE}"
        _time_python(code, env, isolated)  # warm the page cache
        baseline = statistics.median(_time_python("pass", env, isolated) for _ in range(repeats))
        timed = statistics.median(_time_python(code, env, isolated) for _ in range(repeats))
    return {
        "python": "3.12",
        "arch": arch,
        "pyc_files_in_zip": pyc_files,
        "python_pass_ms": baseline,
        "import_ms": timed,
        "import_minus_interpreter_ms": timed - baseline,
    }


def cold_import(repeats: int = 5) -> dict[str, object]:
    """Median wall-clock ms of a fresh ``import worker.lambda_handler`` and of ``pass``,
    with and without cached bytecode, and the import-time breakdown."""
    env = _clean_env()
    _time_python(f"import {MODULE}", env)  # warm the page cache
    baseline = statistics.median(_time_python("pass", env) for _ in range(repeats))
    cached = statistics.median(_time_python(f"import {MODULE}", env) for _ in range(repeats))
    with tempfile.TemporaryDirectory(prefix="bench-nopyc-") as empty:
        nopyc_env = {**env, "PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}
        no_bytecode = statistics.median(
            _time_python(f"import {MODULE}", nopyc_env) for _ in range(repeats)
        )
    return {
        "repeats": repeats,
        "python_pass_ms": baseline,
        "import_ms": cached,
        "import_minus_interpreter_ms": cached - baseline,
        "import_no_bytecode_ms": no_bytecode,
        "import_no_bytecode_minus_interpreter_ms": no_bytecode - baseline,
        "breakdown_ms": import_breakdown(env),
        "packaged": packaged_cold_import(repeats),
    }


def import_breakdown(env: dict[str, str], top: int = 10) -> dict[str, float]:
    """``-X importtime`` of the handler, in ms, by what ``worker`` code imports directly:
    each package a ``worker`` module imports is charged its cumulative time (with
    everything it pulls in first), ``worker`` its own modules' time. No double counting:
    the values add up to the total."""
    proc = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-X", "importtime", "-c", f"import {MODULE}"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    # Lines come children first, indented two spaces per level under their importer.
    pending: dict[int, list[_Import]] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        if not own.strip().isdigit():
            continue  # the header line
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        node = _Import(name.strip(), int(own) / 1000, int(cumulative) / 1000)
        node.children = pending.pop(depth + 1, [])
        pending.setdefault(depth, []).append(node)
    charged: dict[str, float] = {}
    for root in pending.get(0, []):
        if root.package == "worker":
            _charge(root, charged)
    ranked = sorted(charged.items(), key=lambda kv: -kv[1])
    breakdown = {name: round(ms, 1) for name, ms in ranked[:top]}
    breakdown["(other)"] = round(sum(ms for _, ms in ranked[top:]), 1)
    breakdown["(total)"] = round(sum(charged.values()), 1)
    return breakdown


@dataclass
class _Import:
    name: str
    own_ms: float
    cumulative_ms: float
    children: list[_Import] = field(default_factory=list)

    @property
    def package(self) -> str:
        return self.name.split(".")[0]


def _charge(node: _Import, charged: dict[str, float]) -> None:
    if node.package != "worker":
        charged[node.package] = charged.get(node.package, 0.0) + node.cumulative_ms
        return
    charged["worker"] = charged.get("worker", 0.0) + node.own_ms
    for child in node.children:
        _charge(child, charged)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    if not env["PYTHONDONTWRITEBYTECODE"]:
        del env["PYTHONDONTWRITEBYTECODE"]
    return env


def bytecode_note() -> str:
    """How the project's own modules were loaded in the 'cached' condition."""
    pycache = Path(ROOT, "worker", "__pycache__")
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not pycache.exists():
        return "dependencies from cached bytecode; worker/ compiled on each start"
    return "dependencies and worker/ from cached bytecode"
