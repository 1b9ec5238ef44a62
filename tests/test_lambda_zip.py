"""The Lambda deployment zip (sandbox/lambda_zip.py): built from requirements.lock and
worker/ without Docker, and run from its unzipped files by an isolated python3.12.

The zips are built once per module (about 10 s each with a warm wheel cache in
build/wheels; the first run downloads the wheels).
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
import uuid
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from producer.accounts import reset_accounts
from sandbox import lambda_zip, lock_hashes
from sandbox.sqs import LocalSqs, Queues
from worker.contract import encode_body
from worker.db import connect
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

NATIVE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)
OTHER_ARCH = {"x86_64": "arm64", "arm64": "x86_64"}.get(NATIVE_ARCH or "")

ELF_MACHINE = {"x86_64": 0x3E, "arm64": 0xB7}
"""e_machine of an ELF header: EM_X86_64, EM_AARCH64."""

# Runs inside the unzipped package like the Lambda runtime: no site-packages (-I -S),
# sys.path = the task root + the standard library. Reads the event on stdin, prints the
# handler's response and where every imported module came from.
DRIVER = """
import json, os, sys, sysconfig, time
task_root = sys.argv[1]
sys.path.insert(0, task_root)

from worker import lambda_handler
from worker.transport import lambda_handler as transport

class Context:
    def __init__(self):
        self.deadline = time.monotonic() + 60
    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)

response = lambda_handler.handler(json.load(sys.stdin), Context())
transport._service.close()

import psycopg
allowed = (task_root + os.sep, sysconfig.get_paths()["stdlib"] + os.sep)
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
print("RESULT " + json.dumps({
    "response": response,
    "python": list(sys.version_info[:2]),
    "psycopg_impl": psycopg.pq.__impl__,
    "outside": sorted(n for n, f in files.items() if f and not f.startswith(allowed)),
    "project": sorted(n for n in files if n.split(".")[0] in ("producer", "sandbox", "tests")),
}))
"""


def build_zip(arch: str, output: Path) -> tuple[Path, str]:
    """Run the CLI as `make lambda-zip` does; returns the zip and what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.lambda_zip", "--arch", arch, "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return output, done.stdout


def locked() -> dict[str, str]:
    """Normalized name -> version of every requirements.lock pin (hash lines skipped)."""
    return lock_hashes.pins((ROOT / "requirements.lock").read_text())


def elf_machines(archive: zipfile.ZipFile) -> dict[str, int]:
    """ELF e_machine of every ELF file in the zip (extension modules and bundled libs)."""
    machines = {}
    for info in archive.infolist():
        with archive.open(info) as f:
            header = f.read(20)
        if header[:4] == b"\x7fELF":
            machines[info.filename] = int.from_bytes(header[18:20], "little")
    return machines


@pytest.fixture(scope="module")
def native_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The zip for this machine's architecture, built once."""
    if NATIVE_ARCH is None:
        pytest.skip(f"no Lambda architecture matches {platform.machine()}")
    return build_zip(NATIVE_ARCH, tmp_path_factory.mktemp("zip") / "lambda.zip")


@pytest.fixture(scope="module")
def python312() -> str:
    """The interpreter that plays the python3.12 runtime."""
    found = lambda_zip.find_python312()
    if found is None:
        pytest.skip("python3.12 not found (set LAMBDA_PYTHON)")
    return found


def lambda_record(body: str) -> dict[str, Any]:
    """One record as Lambda's SQS event source mapping delivers it."""
    now = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now,
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": now,
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:transfers",
        "awsRegion": "us-east-1",
    }


@pytest.fixture
def task_root(native_zip: tuple[Path, str], tmp_path: Path) -> Path:
    """The zip unpacked as Lambda unpacks it into /var/task."""
    root = tmp_path / "task"
    with zipfile.ZipFile(native_zip[0]) as archive:
        archive.extractall(root)
    return root


def test_handler_runs_from_the_zip_in_isolated_python312(
    task_root: Path,
    python312: str,
    sqs_settings: Settings,
    queues: Queues,
    local_sqs: LocalSqs,
) -> None:
    """Only the zip and the stdlib on sys.path: a good transfer commits, a malformed
    body goes to the DLQ, nothing is reported failed, nothing is imported from outside."""
    reset_accounts(sqs_settings, 10, Decimal(100))
    assert sqs_settings.database_url is not None
    transfer_id = uuid.uuid4()
    good = lambda_record(encode_body(1, 2, Decimal("7.25"), transfer_id))
    malformed = lambda_record("{not json")
    env = {
        **local_sqs.env(),
        "DATABASE_URL": sqs_settings.database_url.get_secret_value(),
        "DLQ_URL": queues.dlq_url,
        "RETRY_BUDGET_S": "5",
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": "transfers",
    }
    done = subprocess.run(
        [python312, "-I", "-S", "-c", DRIVER, str(task_root)],
        input=json.dumps({"Records": [good, malformed]}),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])

    assert result["response"] == {"batchItemFailures": []}
    assert result["python"] == [3, 12]
    assert result["psycopg_impl"] == "binary"
    assert result["outside"] == []
    assert result["project"] == []
    with connect(sqs_settings) as conn:
        row = conn.execute(
            "SELECT status, payer_id, payee_id, amount FROM transfer_results"
            " WHERE transfer_id = %s",
            (transfer_id,),
        ).fetchone()
    assert row == ("committed", 1, 2, Decimal("7.25"))
    dead = (
        local_sqs.client()
        .receive_message(QueueUrl=queues.dlq_url, MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    assert [m["Body"] for m in dead] == ["{not json"]


def test_unzipped_package_trusts_its_own_amazon_roots(task_root: Path, python312: str) -> None:
    """In the Lambda runtime's shape (isolated python3.12, no CA variable in the
    environment) a DSQL connection would verify against the root file inside the zip."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from worker.db import ssl_root_cert\n"
        "from worker.settings import Settings\n"
        "print(ssl_root_cert(Settings(dsql_endpoint='abc.dsql.us-east-1.on.aws')))\n"
    )
    done = subprocess.run(
        [python312, "-I", "-S", "-c", probe, str(task_root)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    path = Path(done.stdout.strip())
    assert path.is_relative_to(task_root)
    assert path.name == "amazon-trust-services.pem"
    assert "Amazon Root CA 1" in path.read_text()


def test_zip_holds_worker_and_exactly_the_locked_distributions(
    native_zip: tuple[Path, str],
) -> None:
    """worker/ plus one dist-info per lock pin at its version; no other project code,
    no console scripts; CPython 3.12 bytecode for every module (cold starts do not
    compile), paths rewritten to /var/task; the CLI prints the size."""
    path, printed = native_zip
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    dists = {}
    for name in names:
        match = re.fullmatch(r"([^/]+)-([^/-]+)\.dist-info/METADATA", name)
        if match:
            dists[canonicalize_name(match[1])] = match[2]
    assert dists == locked()
    assert "worker/lambda_handler.py" in names
    assert {n.split("/")[0] for n in names} & {"producer", "sandbox", "tests", "bin"} == set()
    bytecode = [n for n in names if n.endswith((".pyc", ".pyo"))]
    assert bytecode
    assert all(
        n.endswith(".cpython-312.pyc") and n.split("/")[-2] == "__pycache__" for n in bytecode
    )
    assert len(bytecode) == len([n for n in names if n.endswith(".py")])
    assert "worker/__pycache__/lambda_handler.cpython-312.pyc" in names
    with zipfile.ZipFile(path) as archive:
        pyc = archive.read("worker/__pycache__/lambda_handler.cpython-312.pyc")
    assert b"/var/task/worker/lambda_handler.py" in pyc
    assert b"/tmp/" not in pyc
    assert f"{path}: " in printed
    assert "MiB" in printed


def test_zip_is_deterministic(native_zip: tuple[Path, str], tmp_path: Path) -> None:
    """Sorted entries, one fixed timestamp, 0644/0755 modes; a rebuild is byte-identical."""
    path, _ = native_zip
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {lambda_zip.ZIP_TIMESTAMP}
    assert {i.external_attr >> 16 for i in infos} <= {0o100644, 0o100755}
    assert NATIVE_ARCH is not None
    again, _ = build_zip(NATIVE_ARCH, tmp_path / "again.zip")
    assert again.read_bytes() == path.read_bytes()


def test_every_native_library_is_built_for_the_target_machine(
    native_zip: tuple[Path, str], tmp_path: Path
) -> None:
    """Both architectures build on this machine; every ELF file in each zip is for that
    zip's machine (pydantic-core, psycopg-binary and the libpq it bundles)."""
    assert NATIVE_ARCH is not None
    assert OTHER_ARCH is not None
    other, _ = build_zip(OTHER_ARCH, tmp_path / f"lambda-{OTHER_ARCH}.zip")
    for arch, path in ((NATIVE_ARCH, native_zip[0]), (OTHER_ARCH, other)):
        with zipfile.ZipFile(path) as archive:
            machines = elf_machines(archive)
        assert any(name.startswith("pydantic_core/") for name in machines), arch
        assert any(name.startswith("psycopg_binary.libs/libpq") for name in machines), arch
        assert set(machines.values()) == {ELF_MACHINE[arch]}, arch


@pytest.mark.parametrize(("arch", "machine"), [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_platform_tags_are_what_the_python312_runtime_accepts(arch: str, machine: str) -> None:
    """manylinux 2.34 (Amazon Linux 2023's glibc) down to 2014, newest first, for the
    arch's machine only; 2.28 matters: psycopg-binary's aarch64 wheels start there."""
    tags = lambda_zip.platform_tags(arch)
    assert tags[0] == f"manylinux_2_34_{machine}"
    assert tags[-1] == f"manylinux2014_{machine}"
    assert f"manylinux_2_28_{machine}" in tags
    assert all(tag.endswith(f"_{machine}") for tag in tags)
    assert not [tag for tag in tags if re.search(r"manylinux_2_(3[5-9]|[4-9]\d)_", tag)]


def test_unknown_architecture_is_refused() -> None:
    """Only Lambda's two architectures are accepted."""
    with pytest.raises(ValueError, match="unknown architecture 'i686'"):
        lambda_zip.platform_tags("i686")
