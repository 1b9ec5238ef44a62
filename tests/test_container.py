"""The container deliverables, checked without Docker: Dockerfile, .dockerignore,
docker-compose.yml, compose/elasticmq.conf and requirements.lock.

Each command and environment variable they hand the code goes through the real
argparse parsers and the real Settings class, so a renamed command or setting breaks
a test here instead of a container at start-up.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import requires
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import producer.cli
import worker.ops.cli
from worker.redelivery import RedeliverySchedule
from worker.settings import Backend, Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IMAGE = "dsql-transfers:local"

AWS_SDK_VARIABLES = frozenset(
    {
        "AWS_ENDPOINT_URL_SQS",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
)
"""Read by boto3 itself, not by Settings (AWS_REGION is both)."""

PARSERS = {"worker": worker.ops.cli.build_parser, "producer": producer.cli.build_parser}
"""`python -m <package>` -> the parser of that command line."""


# --- helpers ---------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each Dockerfile instruction, continuations joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions split into build stages (each starts at FROM)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def exec_form(arguments: str) -> list[str]:
    """A JSON exec-form argument list; shell form is refused (no signals to PID 1)."""
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    assert all(isinstance(part, str) for part in value), arguments
    return value


def final_stage_commands() -> dict[str, list[str]]:
    """ENTRYPOINT, CMD and the HEALTHCHECK command of the image's final stage."""
    commands = {}
    for keyword, rest in stages(ROOT / "Dockerfile")[-1]:
        if keyword in {"ENTRYPOINT", "CMD"}:
            commands[keyword] = exec_form(rest)
        elif keyword == "HEALTHCHECK":
            match = re.search(r"\bCMD\s+(\[.*\])\s*$", rest)
            assert match, f"HEALTHCHECK without an exec-form CMD: {rest}"
            commands[keyword] = exec_form(match[1])
    return commands


def compose() -> dict[str, Any]:
    """docker-compose.yml, anchors and merge keys resolved."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def app_services() -> dict[str, dict[str, Any]]:
    """The compose services that run this project's image."""
    services = compose()["services"]
    found = {name: spec for name, spec in services.items() if spec.get("image") == IMAGE}
    assert set(found) >= {"migrate", "setup", "worker", "producer"}, sorted(found)
    return found


def argv_of(spec: dict[str, Any]) -> list[str]:
    """The process a compose service starts: its entrypoint + command, falling back to
    the image's ENTRYPOINT and CMD as Docker does (an entrypoint override drops CMD)."""
    image = final_stage_commands()
    entrypoint = spec.get("entrypoint", image["ENTRYPOINT"])
    command = spec.get("command", image["CMD"] if "entrypoint" not in spec else [])
    assert isinstance(entrypoint, list), "entrypoint must be a list (exec form)"
    assert isinstance(command, list), "command must be a list (exec form)"
    return [*entrypoint, *command]


def parse_command(argv: list[str]) -> str:
    """Parse ``python -m worker|producer ...`` with the real parser, without running it;
    returns the sub-command."""
    assert argv[:2] == ["python", "-m"], argv
    assert argv[2] in PARSERS, argv
    try:
        args = PARSERS[argv[2]]().parse_args(argv[3:])
    except SystemExit:
        pytest.fail(f"{shlex.join(argv)}: the command line refuses these arguments")
    command = args.command
    assert isinstance(command, str)
    return command


def settings_variables() -> set[str]:
    """Environment variable names Settings reads."""
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def parse_hocon(text: str) -> dict[str, Any]:
    """The HOCON subset compose/elasticmq.conf uses: nested ``key { }`` objects,
    ``key = value`` pairs, comments and an include. Anything else fails the test."""
    root: dict[str, Any] = {}
    stack = [root]
    for raw in text.splitlines():
        line = re.sub(r"\s*(#|//).*$", "", raw).strip()
        if not line or line.startswith("include "):
            continue
        if line == "}":
            stack.pop()
        elif match := re.fullmatch(r'"?([\w.-]+)"?\s*\{', line):
            stack[-1][match[1]] = child = {}
            stack.append(child)
        elif match := re.fullmatch(r'"?([\w.-]+)"?\s*[=:]\s*(.+)', line):
            stack[-1][match[1]] = match[2].strip().strip('"')
        else:
            pytest.fail(f"compose/elasticmq.conf: line not understood: {raw!r}")
    assert stack == [root], "unbalanced braces in compose/elasticmq.conf"
    return root


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern
    matching the path or one of its parent directories decides (``!`` re-includes)."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        include = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), glob) for i in range(1, len(parts) + 1)):
            excluded = not include
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def lock_pins() -> dict[str, str]:
    """requirements.lock as normalized name -> version; every requirement must be
    ``name==v`` followed by at least one ``--hash=sha256:...``."""
    pins = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"(?<!\\)\n", text):
        if not block.strip() or block.startswith("#"):
            continue
        pin, *hashes = [part.strip() for part in block.split("\\\n")]
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)", pin)
        assert match, f"requirements.lock: not an exact pin: {pin!r}"
        assert hashes, f"requirements.lock: {pin} has no hash"
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in hashes), pin
        name = canonicalize_name(match[1])
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = match[2]
    return pins


# --- Dockerfile ------------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    """hadolint (from the dev venv) finds no issue in the Dockerfile."""
    done = subprocess.run(
        [str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_base_image_is_pinned_by_digest() -> None:
    """Both stages build FROM the PYTHON_IMAGE build arg, whose default names a Python
    3.12 slim image by tag and multi-arch digest."""
    args = dict(
        rest.split("=", 1)
        for keyword, rest in instructions(ROOT / "Dockerfile")
        if keyword == "ARG"
    )
    assert re.fullmatch(
        r"python:3\.12[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"]
    )
    froms = [stage[0][1].split()[0] for stage in stages(ROOT / "Dockerfile")]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_image_installs_the_lock_by_hash() -> None:
    """The builder installs requirements.lock with --require-hashes, binary wheels only."""
    runs = [rest for keyword, rest in stages(ROOT / "Dockerfile")[0] if keyword == "RUN"]
    (install,) = [r for r in runs if "requirements.lock" in r]
    assert "--require-hashes" in install.split()
    assert "--only-binary=:all:" in install.split()
    assert lock_pins()  # every pin carries hashes


def test_image_commands_parse() -> None:
    """ENTRYPOINT + CMD is `python -m worker run` and the HEALTHCHECK is `python -m worker
    health`, both accepted by the worker's parser."""
    commands = final_stage_commands()
    assert parse_command([*commands["ENTRYPOINT"], *commands["CMD"]]) == "run"
    assert parse_command(commands["HEALTHCHECK"]) == "health"


def test_final_stage_runs_unprivileged_from_the_builder_venv() -> None:
    """The final stage switches to a non-root USER, copies only /opt/venv from the
    builder, and installs nothing itself."""
    final = stages(ROOT / "Dockerfile")[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    copies = [rest for keyword, rest in final if keyword in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not re.search(r"\b(pip|apt-get|apk|gcc)\b", runs), runs


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    """Every COPY source exists and survives .dockerignore (file by file); the venv,
    git, caches, tests, build output and zips stay out of the context."""
    patterns = dockerignore_patterns()
    sources = [
        source
        for stage in stages(ROOT / "Dockerfile")
        for keyword, rest in stage
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignored(relative, patterns), f"{relative} is excluded"
    for unwanted in (
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v",
        "tests/test_container.py",
        "build/lambda.zip",
        "infra/cdk.out/manifest.json",
        "lambda.zip",
        "worker/__pycache__/cli.cpython-312.pyc",
    ):
        assert dockerignored(unwanted, patterns), f"{unwanted} would be in the context"


def test_copied_files_build_the_project(tmp_path: Path) -> None:
    """The files the builder stage copies are enough for `pip install --no-deps .`: the
    wheel holds worker and producer (README.md is needed by pyproject's readme)."""
    context = tmp_path / "context"
    for stage in stages(ROOT / "Dockerfile")[:-1]:
        for keyword, rest in stage:
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    target = context / source
                    if (ROOT / source).is_dir():
                        shutil.copytree(ROOT / source, target)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(ROOT / source, target)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "dist", "."],
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (context / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {"worker", "producer"} <= {name.split("/")[0] for name in names}
    assert "worker/lambda_handler.py" in names


# --- docker-compose.yml ----------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    """check-jsonschema validates docker-compose.yml against the vendored compose spec."""
    done = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_third_party_images_are_pinned_by_digest() -> None:
    """postgres and ElasticMQ are pinned by version tag and digest."""
    services = compose()["services"]
    for name in ("postgres", "elasticmq"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+[\w.-]*@sha256:[0-9a-f]{64}", image), image


def test_compose_commands_parse() -> None:
    """Each service on the project image starts a command its parser accepts: migrate,
    producer setup, worker run, and the producer tool's default."""
    commands = {name: parse_command(argv_of(spec)) for name, spec in app_services().items()}
    assert commands == {
        "migrate": "migrate",
        "setup": "setup",
        "worker": "run",
        "producer": "stats",
    }
    setup = producer.cli.build_parser().parse_args(argv_of(app_services()["setup"])[3:])
    assert (setup.accounts, setup.balance) == (1000, 100)


def test_producer_tool_takes_the_documented_load_command() -> None:
    """`docker compose run --rm producer load --iters 2000 --threads 10 --accounts 10
    --wait` parses: run replaces the command and keeps the service's entrypoint."""
    spec = app_services()["producer"]
    assert spec["profiles"] == ["tools"]
    argv = [
        *spec["entrypoint"],
        *shlex.split("load --iters 2000 --threads 10 --accounts 10 --wait"),
    ]
    assert parse_command(argv) == "load"


def test_compose_environment_is_read_by_the_code() -> None:
    """Every variable given to the project's services is a Settings field or one the
    AWS SDK reads; none is a typo the code would ignore."""
    known = settings_variables() | AWS_SDK_VARIABLES
    for name, spec in app_services().items():
        environment = spec.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        unknown = sorted(set(environment) - known)
        assert not unknown, f"{name}: variables the code never reads: {unknown}"


def test_compose_environment_validates_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() from the worker's compose environment validates and selects PostgreSQL
    and both queues."""
    environment = app_services()["worker"]["environment"]
    for key in settings_variables():
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.backend is Backend.POSTGRES
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == environment["DATABASE_URL"]
    assert settings.queue_url == environment["QUEUE_URL"]
    assert settings.dlq_url == environment["DLQ_URL"]


def test_compose_urls_point_at_its_own_services() -> None:
    """DATABASE_URL names the postgres service with its credentials; the SQS endpoint
    and queue URLs name the elasticmq service."""
    services = compose()["services"]
    environment = app_services()["worker"]["environment"]
    database = urlsplit(environment["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.hostname in services
    assert services[database.hostname]["image"].startswith("postgres:")
    assert (database.username, database.password, database.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    for key in ("AWS_ENDPOINT_URL_SQS", "QUEUE_URL", "DLQ_URL"):
        host = urlsplit(environment[key]).hostname
        assert host in services, key
        assert "elasticmq" in services[host]["image"], key


def test_scalable_worker_waits_for_its_dependencies() -> None:
    """The worker has no container_name or published port (so --scale works), waits for
    healthy postgres and elasticmq and a completed setup, and gets 30 s to drain."""
    services = compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "elasticmq": {"condition": "service_healthy"},
        "setup": {"condition": "service_completed_successfully"},
    }
    assert services["setup"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    assert "setup" not in services["producer"]["depends_on"]
    assert worker["stop_grace_period"] == "30s"
    assert Settings.model_fields["drain_timeout_s"].default < 30
    for name in ("postgres", "elasticmq"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name


# --- compose/elasticmq.conf ------------------------------------------------------------


def test_elasticmq_declares_the_compose_queues_and_redrive() -> None:
    """The config declares the queue and DLQ the compose URLs name, with a redrive after
    the receives the redelivery schedule needs for Settings' defaults (13), and builds
    queue URLs exactly as QUEUE_URL and DLQ_URL spell them."""
    config = parse_hocon((ROOT / "compose" / "elasticmq.conf").read_text())
    environment = app_services()["worker"]["environment"]
    queue = environment["QUEUE_URL"].rsplit("/", 1)[1]
    dlq = environment["DLQ_URL"].rsplit("/", 1)[1]

    assert set(config["queues"]) == {queue, dlq}
    receives = RedeliverySchedule.from_settings(Settings.model_construct()).max_receive_count
    assert receives == 13
    assert config["queues"][queue]["deadLettersQueue"] == {
        "name": dlq,
        "maxReceiveCount": str(receives),
    }
    assert config["queues"][queue]["defaultVisibilityTimeout"] == "30 seconds"

    node = config["node-address"]
    base = f"{node['protocol']}://{node['host']}:{node['port']}{node['context-path']}"
    account = config["aws"]["accountId"]
    assert environment["QUEUE_URL"] == f"{base}/{account}/{queue}"
    assert environment["DLQ_URL"] == f"{base}/{account}/{dlq}"
    assert config["aws"]["region"] == environment["AWS_REGION"]
    endpoint = urlsplit(environment["AWS_ENDPOINT_URL_SQS"])
    assert endpoint.port == int(config["rest-sqs"]["bind-port"])


def test_elasticmq_service_loads_that_config() -> None:
    """The elasticmq service mounts compose/elasticmq.conf where the image reads its
    config, and health-checks the port the SQS API binds."""
    service = compose()["services"]["elasticmq"]
    assert "./compose/elasticmq.conf:/opt/elasticmq.conf:ro" in service["volumes"]
    config = parse_hocon((ROOT / "compose" / "elasticmq.conf").read_text())
    probe = next(part for part in service["healthcheck"]["test"] if part.startswith("http"))
    assert urlsplit(probe).port == int(config["rest-sqs"]["bind-port"])
    assert urlsplit(probe).path == "/health"


# --- requirements.lock -----------------------------------------------------------------


def test_lock_pins_every_runtime_dependency() -> None:
    """Each [project.dependencies] entry, and each extra it asks for, is pinned with ==
    at a version its specifier allows; dev dependencies are not in the lock."""
    pins = lock_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(Version(pins[name])), (name, pins[name])
        for extra in requirement.extras:
            for dependency in map(Requirement, requires(requirement.name) or []):
                marker = dependency.marker
                if marker is not None and marker.evaluate({"extra": extra}):
                    assert canonicalize_name(dependency.name) in pins, (line, dependency)
    for line in project["optional-dependencies"]["dev"]:
        name = canonicalize_name(Requirement(line).name)
        assert name not in pins, f"dev dependency {name} in the lock"
