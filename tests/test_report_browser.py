"""The report as a browser shows it: headless Chromium renders the page with no network
and the screenshot is a picture, not a blank page. ``make browser-check`` installs
Debian's ``chromium`` and runs this; without it the test is skipped."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from producer.cli import main
from tests.test_stats import _fill, _random_rows
from worker.settings import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=10000", "--window-size=1400,1600",
)  # fmt: skip


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit truecolor PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert color in (2, 6)
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [r[i : i + 3] for r in rows for i in range(0, stride, channels)]  # type: ignore[misc]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make browser-check` installs it")
def test_chromium_renders_the_report_offline_and_it_is_not_blank(
    settings: Settings, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A screenshot of the page (network off) has the page's colours: mostly white
    background, plus the chart colours plotly draws (so the inlined JS ran)."""
    assert CHROMIUM is not None
    monkeypatch.setenv("DATABASE_URL", database_url)
    _fill(database_url, _random_rows(500, seed=6))
    page = tmp_path / "report.html"
    assert main(["report", "--output", str(page)]) == 0
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    if keep := os.environ.get("REPORT_SCREENSHOT"):
        shutil.copy(shot, keep)
    _, _, pixels = png_pixels(shot.read_bytes())
    colours = Counter(pixels)
    white, _ = colours.most_common(1)[0]
    assert white == b"\xff\xff\xff"  # the page's background
    assert colours[white] < 0.97 * len(pixels), "almost only background: nothing rendered"
    plotly_blue, plotly_red = (0x63, 0x6E, 0xFA), (0xD6, 0x27, 0x28)  # first trace, rejections
    assert any(sum(abs(a - b) for a, b in zip(p, plotly_blue, strict=True)) < 30 for p in colours)
    assert any(sum(abs(a - b) for a, b in zip(p, plotly_red, strict=True)) < 30 for p in colours)
