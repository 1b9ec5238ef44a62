"""``producer report`` and ``load --wait --report``: the page's numbers are stats'."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from producer.cli import main
from sandbox.sqs import LocalSqs, Queues
from tests.support import running_worker
from tests.test_send_load import open_accounts
from tests.test_stats import T0, _fill, _random_rows
from worker.settings import Settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def page_stats(page: str) -> tuple[dict[str, object], str]:
    """The page's machine-readable STATS and its visible STATS block."""
    data = re.search(r'<script id="stats-json" type="application/json">(.*?)</script>', page, re.S)
    shown = re.search(r'<pre id="stats">(.*?)</pre>', page, re.S)
    assert data is not None
    assert shown is not None
    return json.loads(data.group(1)), html.unescape(shown.group(1))


@pytest.fixture
def cli(settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment pointing the CLI at this test's migrated database."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)


@pytest.mark.usefixtures("cli")
def test_report_numbers_match_stats_for_the_same_window(
    capsys: pytest.CaptureFixture[str], database_url: str, tmp_path: Path
) -> None:
    """For a window of 800 results the page's STATS (JSON and the visible block) are
    exactly `stats --json` and `stats` for that window; the page needs no network."""
    _fill(database_url, _random_rows(800, seed=5))
    since = (T0 + timedelta(seconds=10)).isoformat()
    until = (T0 + timedelta(seconds=70)).isoformat()
    window = ["--since", since, "--until", until]
    output = tmp_path / "run.html"
    code, out, err = run(capsys, "report", *window, "--output", str(output))
    assert code == 0, err
    assert str(output) in out
    page = output.read_text()
    data, shown = page_stats(page)

    code, out, _ = run(capsys, "stats", "--json", *window)
    assert code == 0
    expected = json.loads(out)
    assert 400 < expected["total"] < 800  # the window cuts the rows
    assert data == expected
    code, out, _ = run(capsys, "stats", *window)
    assert shown == out.rstrip("\n")
    for figure in ("results per second", "latency percentiles", "attempts per", "rejections by"):
        assert figure in page
    assert not re.search(r'<script[^>]+src=|<link[^>]+href="http', page)  # all inline
    assert "Plotly.newPlot" in page
    assert len(page) > 1_000_000  # plotly.js itself is in the file


@pytest.mark.usefixtures("cli")
def test_report_rejects_an_empty_or_backwards_window(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--since after --until, or a time it cannot read, is a clear error (exit 2)."""
    code, _, err = run(capsys, "report", "--since", "1h", "--until", "2h", "--output", "x.html")
    assert code == 2
    assert "--since must be before --until" in err
    code, _, err = run(capsys, "report", "--since", "yesterday-ish")
    assert code == 2
    assert "not a time" in err
    assert not (tmp_path / "x.html").exists()


def test_load_wait_report_writes_the_runs_page(
    capsys: pytest.CaptureFixture[str],
    local_sqs: LocalSqs,
    queues: Queues,
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """load --wait --report FILE: the page counts exactly the run's transfers and shows
    its settings; without --wait --report is refused."""
    for name, value in {**local_sqs.env(), "QUEUE_URL": queues.queue_url,
                        "DATABASE_URL": database_url}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)
    output = tmp_path / "run.html"
    code, _, err = run(capsys, "load", "--iters", "5", "--report", str(output))
    assert (code, output.exists()) == (2, False)
    assert "--report needs --wait" in err

    open_accounts(database_url, 4, "3")
    worker = settings.model_copy(update={"queue_url": queues.queue_url, "receive_wait_s": 1})
    with running_worker(worker):
        code, out, err = run(
            capsys, "load", "--iters", "60", "--threads", "2", "--accounts", "4", "--wait",
            "--json", "--timeout", "60", "--report", str(output),
        )  # fmt: skip
    assert code == 0, err
    loaded = json.loads(out)
    data, _ = page_stats(output.read_text())
    assert data["total"] == loaded["sent"] == 60
    assert (data["committed"], data["rejected"]) == (loaded["committed"], loaded["rejected"])
    assert data["rejected_by_reason"] == loaded["rejected_by_reason"]
    assert data["attempts"] == loaded["attempts"]
    assert ">iters</th><td>60<" in output.read_text()
