"""sandbox/lock_hashes.py: the hashed requirements.lock, without the network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sandbox import lock_hashes

LOCK = """# header line
# second
pydantic_core==2.50.5
six==1.17.0
"""


def test_pins_reads_plain_and_hashed_locks() -> None:
    """Pins come out normalized, hash and comment lines are skipped."""
    hashed = "# h\nsix==1.17.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    assert lock_hashes.pins(LOCK) == {"pydantic-core": "2.50.5", "six": "1.17.0"}
    assert lock_hashes.pins(hashed) == {"six": "1.17.0"}
    with pytest.raises(lock_hashes.LockError, match="not an exact pin"):
        lock_hashes.pins("six>=1\n")


def test_hashes_cover_every_wheel_of_the_pinned_version(tmp_path: Path) -> None:
    """Each pinned version gets the sha256 of every wheel found for it (one per target);
    other versions are ignored, and the rendered lock keeps the header and the spelling."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = {
        tmp_path / "a" / "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_x86_64.whl": b"x86",
        tmp_path / "b" / "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_aarch64.whl": b"arm",
        tmp_path / "a" / "six-1.17.0-py2.py3-none-any.whl": b"six",
        tmp_path / "b" / "six-1.16.0-py2.py3-none-any.whl": b"old",
    }
    for path, data in files.items():
        path.write_bytes(data)
    versions = lock_hashes.pins(LOCK)
    hashes = lock_hashes.hashes_by_name([tmp_path / "a", tmp_path / "b"], versions)
    digest = {data: hashlib.sha256(data).hexdigest() for data in files.values()}
    assert hashes == {
        "pydantic-core": {digest[b"x86"], digest[b"arm"]},
        "six": {digest[b"six"]},
    }
    names = {"pydantic-core": "pydantic_core", "six": "six"}
    text = lock_hashes.render(lock_hashes.header(LOCK), versions, names, hashes)
    assert text.startswith("# header line\n# second\npydantic_core==2.50.5 \\\n    --hash=sha256:")
    assert lock_hashes.pins(text) == versions
    with pytest.raises(lock_hashes.LockError, match="no wheel found for six"):
        lock_hashes.render("", versions, names, {"pydantic-core": {"x"}})


def test_platform_tags_follow_the_target_glibc() -> None:
    """The image (glibc 2.41) accepts newer manylinux tags than Lambda (2.34)."""
    assert lock_hashes.platform_tags("aarch64", 41)[0] == "manylinux_2_41_aarch64"
    assert lock_hashes.platform_tags("x86_64", 34)[0] == "manylinux_2_34_x86_64"
    assert lock_hashes.platform_tags("x86_64", 34)[-1] == "manylinux2014_x86_64"
