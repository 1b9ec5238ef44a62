"""``python -m producer``: setup, balance, history, audit and stats on a real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from producer import audit as audit_module
from producer.accounts import ACCOUNT_BATCH, reset_accounts
from producer.audit import run_audit
from producer.cli import main
from producer.progress import ProgressBar
from sandbox.dsql_faults import DsqlFaults
from sandbox.postgres import free_port
from worker.contract import TransferRequest
from worker.engine import TransferEngine
from worker.outcomes import TransferResult
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment pointing the CLI at this test's migrated database (``settings``)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def transfer(engine: TransferEngine, payer: int, payee: int, amount: str) -> TransferResult:
    """Apply one transfer with a fresh id."""
    return engine.apply(
        TransferRequest(
            transfer_id=uuid.uuid4(), payer_id=payer, payee_id=payee, amount=Decimal(amount)
        )
    )


def transfer_after_one_conflict(
    engine: TransferEngine, database_url: str, payer: int, payee: int, amount: str
) -> TransferResult:
    """Apply a transfer whose first attempt loses a write-write conflict, deterministically.

    Another transaction updates the payer and holds the row lock until the engine's
    UPDATE is seen waiting on it; committing then makes that UPDATE fail with a
    serialization error (REPEATABLE READ), and the engine's second attempt succeeds.
    """
    with (
        psycopg.connect(database_url) as blocker,
        psycopg.connect(database_url, autocommit=True) as watcher,
        ThreadPoolExecutor(1) as executor,
    ):
        blocker.execute("UPDATE accounts SET balance = balance WHERE id = %s", (payer,))
        future = executor.submit(transfer, engine, payer, payee, amount)
        deadline = time.monotonic() + 10
        while not watcher.execute(
            "SELECT 1 FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone():
            assert time.monotonic() < deadline, "the transfer never waited for the lock"
            time.sleep(0.01)
        blocker.commit()
        return future.result(timeout=10)


# --- setup --------------------------------------------------------------------------


@pytest.mark.usefixtures("cli")
def test_setup_creates_accounts_and_records_the_baseline(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    """setup creates accounts 1..N with balance B and stores N, B and N x B for the audit."""
    code, out, _ = run(capsys, "setup", "--accounts", "50", "--balance", "100.25")
    assert code == 0
    assert out.splitlines() == [
        "BASELINE",
        "  accounts        50",
        "  initial balance 100.25",
        "  expected total  5012.50",
    ]
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*), min(id), max(id), min(balance), max(balance) FROM accounts"
        ).fetchone() == (50, 1, 50, Decimal("100.25"), Decimal("100.25"))
        assert conn.execute(
            "SELECT accounts, initial_balance, expected_total FROM ledger_baseline"
        ).fetchall() == [(50, Decimal("100.25"), Decimal("5012.50"))]


@pytest.mark.usefixtures("cli")
def test_setup_again_replaces_accounts_results_and_baseline(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: TransferEngine
) -> None:
    """A second setup with another N leaves only the new accounts, no old results."""
    assert run(capsys, "setup", "--accounts", "40", "--balance", "10")[0] == 0
    assert transfer(engine, 1, 40, "3").committed
    assert transfer(engine, 2, 3, "30").reason is not None

    assert run(capsys, "setup", "--accounts", "20", "--balance", "7")[0] == 0
    with psycopg.connect(database_url) as conn:
        accounts = conn.execute("SELECT count(*), max(id), sum(balance) FROM accounts")
        assert accounts.fetchone() == (20, 20, Decimal(140))
        assert conn.execute("SELECT count(*) FROM transfer_results").fetchone() == (0,)
        assert conn.execute("SELECT accounts, expected_total FROM ledger_baseline").fetchall() == [
            (20, Decimal(140))
        ]


@pytest.mark.usefixtures("cli")
def test_setup_beyond_one_batch_reports_each_batch_and_audits_clean(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    """3,001 accounts go in four batches (progress lines on a non-TTY) and audit is ok."""
    accounts = 3 * ACCOUNT_BATCH + 1
    code, _, err = run(
        capsys, "setup", "--accounts", str(accounts), "--balance", "1.5", "--parallelism", "1"
    )
    assert code == 0
    progress = [line for line in err.splitlines() if " rows " in line]
    # Three batches are a third each (one line each), the fourth ends the job.
    assert len(progress) == 4
    assert progress[-1].split()[1] == "3,001/3,001"
    assert "100.0 %" in progress[-1]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM accounts").fetchone() == (3001, 3001)
    code, out, _ = run(capsys, "audit")
    assert code == 0, out
    assert out.splitlines()[0] == "AUDIT ok"


REFUSE_ABOVE = 300


@pytest.mark.usefixtures("cli")
def test_setup_halves_batches_the_server_refuses_as_too_large(
    capsys: pytest.CaptureFixture[str], database_url: str, dsql_faults: DsqlFaults
) -> None:
    """With a server that refuses more than 300 rows per transaction (54000, the shared
    sandbox.dsql_faults row limit), setup still
    replaces 400 results and 2,500 accounts: refused batches are split until they fit,
    and the audit is clean."""
    assert run(capsys, "setup", "--accounts", "2500", "--balance", "2")[0] == 0
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO transfer_results (transfer_id, payer_id, payee_id, amount, status,"
            " attempts, completed_at)"
            " SELECT gen_random_uuid(), 1, 2, 1, 'rejected', 1, now() FROM generate_series(1, 400)"
        )
    dsql_faults.limit_rows(REFUSE_ABOVE)
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute("DELETE FROM transfer_results")
    assert refused.value.sqlstate == "54000"  # the trigger works as DSQL's limit would

    code, out, err = run(
        capsys, "setup", "--accounts", "2500", "--balance", "3", "--parallelism", "2"
    )
    assert code == 0, err
    assert "expected total  7500" in out
    assert "refused" in err
    assert "split" in err
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone() == (
            2500,
            Decimal(7500),
        )
        assert conn.execute("SELECT count(*) FROM transfer_results").fetchone() == (0,)
    code, out, _ = run(capsys, "audit")
    assert code == 0, out


@pytest.mark.usefixtures("cli")
def test_setup_reports_a_batch_refused_even_at_one_row(
    capsys: pytest.CaptureFixture[str], dsql_faults: DsqlFaults
) -> None:
    """A server refusing every row (54000 above 0 rows) is a clear error, exit 2, not an
    endless split."""
    dsql_faults.limit_rows(0)
    code, _, err = run(capsys, "setup", "--accounts", "5", "--balance", "1")
    assert code == 2
    assert "refused a batch of 1 row(s)" in err


@pytest.mark.parametrize(
    ("accounts", "balance", "message"),
    [
        ("0", "10", "must be at least 1"),
        ("many", "10", "not a whole number"),
        ("10", "ten", "not a decimal number"),
        ("10", "NaN", "not a finite number"),
        ("1000001", "10", "accounts must be between 1 and 1,000,000"),
        ("10", "-1", "balance must be >= 0"),
        ("10", "0.0000001", "fit numeric(18,6)"),
    ],
)
@pytest.mark.usefixtures("cli")
def test_setup_with_invalid_arguments_exits_2_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], database_url: str, accounts: str, balance: str, message: str
) -> None:
    """A bad account count or balance is a clear error on stderr, exit 2, nothing deleted."""
    assert run(capsys, "setup", "--accounts", "5", "--balance", "1")[0] == 0
    code, out, err = run(capsys, "setup", "--accounts", accounts, "--balance", balance)
    assert code == 2
    assert message in err
    assert out == ""
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM ledger_baseline").fetchone() == (1,)


def test_without_a_database_configured_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither DATABASE_URL nor DSQL_ENDPOINT: one line naming both, exit 2."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)
    code, out, err = run(capsys, "balance", "1")
    assert code == 2
    assert out == ""
    assert "DATABASE_URL" in err
    assert "DSQL_ENDPOINT" in err


def test_invalid_settings_exit_2_naming_the_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed environment variable is one line naming the setting, not a traceback."""
    monkeypatch.setenv("POOL_MAX_SIZE", "plenty")
    code, _, err = run(capsys, "stats")
    assert code == 2
    assert err.startswith("error: invalid settings in the environment: pool_max_size:")


def test_an_unreachable_database_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection is reported as 'database unavailable', exit 2."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    code, _, err = run(capsys, "audit")
    assert code == 2
    assert err.startswith("error: database unavailable:")


def test_on_an_unmigrated_database_exits_2_pointing_at_migrate(
    capsys: pytest.CaptureFixture[str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing tables are reported as 'run migrate first', not as a traceback."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, _, err = run(capsys, "balance", "1")
    assert code == 2
    assert "python -m worker migrate" in err


# --- balance ------------------------------------------------------------------------


@pytest.mark.usefixtures("cli")
def test_balance_of_an_existing_and_a_missing_account(
    capsys: pytest.CaptureFixture[str], engine: TransferEngine
) -> None:
    """balance prints the current balance; an unknown account exits 1 with a message."""
    assert run(capsys, "setup", "--accounts", "3", "--balance", "100")[0] == 0
    assert transfer(engine, 1, 2, "12.5").committed
    assert run(capsys, "balance", "2") == (0, "account 2 balance 112.500000\n", "")
    code, out, err = run(capsys, "balance", "4")
    assert (code, out) == (1, "")
    assert "account 4 not found" in err


# --- history ------------------------------------------------------------------------


def _history(capsys: pytest.CaptureFixture[str], *argv: str) -> list[list[str]]:
    code, out, _ = run(capsys, "history", *argv)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["completed_at", "(UTC)", "dir", "counterparty"]
    # date, time, dir, counterparty, amount, outcome, transfer_id
    return [row.split() for row in rows]


@pytest.mark.usefixtures("cli")
def test_history_lists_transfers_in_and_out_newest_first(
    capsys: pytest.CaptureFixture[str], engine: TransferEngine
) -> None:
    """Payments by and to the account, newest first, each with its counterparty."""
    assert run(capsys, "setup", "--accounts", "3", "--balance", "100")[0] == 0
    applied = [
        transfer(engine, 1, 2, "10"),  # out
        transfer(engine, 2, 1, "3"),  # in
        transfer(engine, 3, 1, "5"),  # in
        transfer(engine, 1, 1, "1"),  # same_account: listed once
        transfer(engine, 1, 3, "1000"),  # out, insufficient_funds
        transfer(engine, 2, 3, "1"),  # not account 1's
    ]
    rows = _history(capsys, "1")
    assert [row[2:6] for row in rows] == [
        ["out", "3", "1000.000000", "insufficient_funds"],
        ["self", "1", "1.000000", "same_account"],
        ["in", "3", "5.000000", "committed"],
        ["in", "2", "3.000000", "committed"],
        ["out", "2", "10.000000", "committed"],
    ]
    assert [row[6] for row in rows] == [str(r.transfer_id) for r in reversed(applied[:5])]


@pytest.mark.usefixtures("cli")
def test_history_respects_the_limit(
    capsys: pytest.CaptureFixture[str], engine: TransferEngine
) -> None:
    """--limit N keeps only the N newest results."""
    assert run(capsys, "setup", "--accounts", "2", "--balance", "100")[0] == 0
    applied = [transfer(engine, 1 + i % 2, 2 - i % 2, str(i + 1)) for i in range(5)]
    rows = _history(capsys, "2", "--limit", "2")
    assert [row[6] for row in rows] == [str(applied[4].transfer_id), str(applied[3].transfer_id)]


@pytest.mark.usefixtures("cli")
def test_history_of_an_account_without_transfers(capsys: pytest.CaptureFixture[str]) -> None:
    """No results is said plainly, not printed as an empty table."""
    assert run(capsys, "setup", "--accounts", "2", "--balance", "1")[0] == 0
    assert run(capsys, "history", "2") == (0, "no transfers recorded for account 2\n", "")


# --- audit --------------------------------------------------------------------------


@pytest.mark.usefixtures("cli")
def test_audit_passes_on_a_clean_ledger_and_fails_naming_a_corrupted_account(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: TransferEngine
) -> None:
    """Exit 0 after real transfers; exit 1 naming account 7 after a direct UPDATE."""
    assert run(capsys, "setup", "--accounts", "10", "--balance", "50")[0] == 0
    assert transfer(engine, 7, 3, "20").committed
    code, out, _ = run(capsys, "audit")
    assert code == 0
    assert out.splitlines()[0] == "AUDIT ok"

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 7")

    code, out, _ = run(capsys, "audit")
    assert code == 1
    assert out.splitlines()[0].startswith("AUDIT FAILED")
    violations = [line for line in out.splitlines() if line.strip().startswith("violation")]
    assert any("account 7 balance 31.000000" in v for v in violations)

    code, out, _ = run(capsys, "audit", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["total"] == "501.000000"
    assert any(v.startswith("account 7 ") for v in report["violations"])


@pytest.mark.usefixtures("cli")
def test_audit_in_chunks_finds_what_one_snapshot_would(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: TransferEngine
) -> None:
    """Checked 3 accounts per snapshot, a clean ledger passes with the right totals,
    and money paid to an account id above every existing one (the open last range) is
    reported as a loss."""
    assert run(capsys, "setup", "--accounts", "10", "--balance", "50")[0] == 0
    for payer, payee in ((1, 10), (9, 2), (5, 6), (10, 1)):
        assert transfer(engine, payer, payee, "7").committed
    with psycopg.connect(database_url) as conn:
        report = run_audit(conn, chunk=3)
        assert report.violations == []
        assert (report.accounts, report.total, report.committed_transfers) == (10, 500, 4)
        # A committed debit from account 4 to an account that does not exist.
        conn.execute("UPDATE accounts SET balance = balance - 5 WHERE id = 4")
        conn.execute(
            "INSERT INTO transfer_results (transfer_id, payer_id, payee_id, amount, status,"
            " attempts, completed_at) VALUES (gen_random_uuid(), 4, 99, 5, 'committed', 1, now())"
        )
        conn.commit()
        report = run_audit(conn, chunk=3)
    assert report.violations == [
        "total balance 495.000000 != expected 500.000000 (difference -5.000000)"
    ]
    assert report.committed_transfers == 5


def test_audit_says_when_the_ledger_changed_between_chunks(
    settings: Settings, database_url: str, engine: TransferEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transfer committed after the first chunk was read, between an account of that
    chunk and one of a later chunk, is reported as a change during the audit, not as a
    loss or a clean pass."""
    reset_accounts(settings, 6, Decimal(100))
    audit_range = audit_module._audit_range
    calls: list[int] = []

    def then_transfer(*args: Any) -> None:
        audit_range(*args)
        calls.append(1)
        if len(calls) == 1:  # account 1 was read; account 6 is in the last chunk
            assert transfer(engine, 1, 6, "10").committed

    monkeypatch.setattr(audit_module, "_audit_range", then_transfer)
    with psycopg.connect(database_url) as conn:
        report = run_audit(conn, chunk=2)
    assert len(calls) == 4  # three chunks of two, then the empty range above account 6
    assert any("changed while the audit ran" in v for v in report.violations), report.violations


# --- stats --------------------------------------------------------------------------


@pytest.mark.usefixtures("cli")
def test_stats_match_the_applied_transfers_in_text_and_json(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: TransferEngine
) -> None:
    """Counts by status and reason, the attempts histogram and retries match what ran."""
    assert run(capsys, "setup", "--accounts", "4", "--balance", "100")[0] == 0
    assert transfer(engine, 1, 2, "10").committed
    assert transfer(engine, 2, 3, "20").committed
    assert transfer(engine, 3, 4, "500").reason == "insufficient_funds"
    assert transfer(engine, 4, 4, "1").reason == "same_account"
    retried = transfer_after_one_conflict(engine, database_url, 1, 3, "5")
    assert (retried.committed, retried.attempts) == (True, 2)

    code, out, _ = run(capsys, "stats")
    assert code == 0
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert out.splitlines()[0] == "STATS"
    assert lines["total"] == ["5"]
    assert lines["committed"] == ["3", "(60.00", "%)"]
    assert lines["rejected"] == ["2", "(40.00", "%)", "insufficient_funds=1", "same_account=1"]
    assert lines["attempts"] == ["1=4", "2=1"]
    assert lines["retries"][:3] == ["total=1", "max=1", "per_transfer=0.2000"]
    assert "transfers/s" in out

    code, out, _ = run(capsys, "stats", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["total"], data["committed"], data["rejected"]) == (5, 3, 2)
    assert data["rejected_by_reason"] == {"insufficient_funds": 1, "same_account": 1}
    assert data["attempts"] == {"1": 4, "2": 1}
    assert data["retries"] == {
        "total": 1,
        "max": 1,
        "per_transfer": 0.2,
        "retried_transfers": 1,
        "retried_pct": 20.0,
    }
    assert data["transaction_ms"]["count"] == 3
    assert 0 < data["transaction_ms"]["min"] <= data["transaction_ms"]["max"]
    assert data["throughput_per_s"] == pytest.approx(5 / data["window_s"])


# --- as a real process --------------------------------------------------------------


@pytest.mark.usefixtures("settings")
def test_python_dash_m_producer_runs_setup_and_audit(database_url: str) -> None:
    """`python -m producer` works as a process: exit codes, stdout and stderr as documented."""
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("DSQL_ENDPOINT", None)

    def producer(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producer", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    setup = producer("setup", "--accounts", "25", "--balance", "4")
    assert setup.returncode == 0, setup.stderr
    assert "expected total  100" in setup.stdout
    assert "25/25 rows" in setup.stderr  # the progress bar goes to stderr

    audit = producer("audit", "--json")
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["ok"] is True

    missing = producer("balance", "26")
    assert missing.returncode == 1
    assert "account 26 not found" in missing.stderr


# --- the progress bar ---------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_without_a_tty_prints_a_line_per_ten_percent() -> None:
    """Logs get one line per 10 % crossed, with count/total, percent and rate."""
    stream, clock = io.StringIO(), FakeClock()
    with ProgressBar(1000, label="setup", stream=stream, tty=False, clock=clock) as bar:
        clock.now = 1.0
        bar.advance(50)  # 5 %: nothing yet
        assert stream.getvalue() == ""
        bar.advance(50)  # 10 %
        bar.advance(850)  # 95 %: one line, not eight
        clock.now = 4.0
        bar.advance(50)  # 100 %
    assert stream.getvalue().splitlines() == [
        "setup  100/1,000 rows   10.0 %  100 rows/s",
        "setup  950/1,000 rows   95.0 %  950 rows/s",
        "setup  1,000/1,000 rows  100.0 %  250 rows/s",
    ]


def test_progress_without_a_tty_reports_where_an_unfinished_job_stopped() -> None:
    """Closing between two 10 % steps still prints the last count."""
    stream = io.StringIO()
    with ProgressBar(100, stream=stream, tty=False, clock=FakeClock()) as bar:
        bar.advance(10)
        bar.advance(5)
    assert [line.split()[0] for line in stream.getvalue().splitlines()] == ["10/100", "15/100"]


def test_progress_on_a_tty_redraws_in_place_and_ends_the_line() -> None:
    """On a terminal each redraw starts with \\r, at most every redraw_s; close adds \\n."""
    stream, clock = io.StringIO(), FakeClock()
    bar = ProgressBar(10, stream=stream, tty=True, clock=clock, redraw_s=0.5)
    bar.advance(1)  # first draw
    bar.advance(1)  # too soon: skipped
    clock.now = 1.0
    bar.advance(3)
    bar.close()
    text = stream.getvalue()
    assert text.endswith("\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[" + "#" * 3 + "." * 27 + "] 1/10 rows")
    assert "5/10 rows   50.0 %  5 rows/s" in frames[1]
    assert frames[2].startswith("[" + "#" * 15 + "." * 15 + "] 5/10")
