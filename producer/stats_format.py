"""The text and JSON forms of the producer's statistics: what ``stats`` and ``load
--wait`` print, and the STATS block the HTML report shows.

Every key of a JSON form is always present (null means "no data"); percentages are
0-100 floats. The text forms are blocks of :func:`producer.console.line` figures.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from producer.console import line
from producer.percentiles import LatencySummary
from producer.stats import LoadStats, RetrySummary, TransferStats


def stats_as_dict(stats: TransferStats) -> dict[str, Any]:
    """JSON-ready form of ``stats``; every key is always present.

    Keys: ``total``, ``committed``, ``committed_pct``, ``rejected``, ``rejected_pct``,
    ``rejected_by_reason`` ({reason: count}), ``attempts`` ({"1": count, ...}, keys are
    strings because JSON's are), ``retries`` ({``total``, ``max``, ``per_transfer``,
    ``retried_transfers``, ``retried_pct``}), ``transaction_ms`` ({``count``, ``min``,
    ``avg``, ``p50``, ``p99``, ``max``} or null), ``first_completed_at`` and
    ``last_completed_at`` (ISO 8601 or null), ``window_s`` and ``throughput_per_s``
    (floats or null). Percentages are 0-100 floats; null means "no data".
    """
    return {
        "total": stats.total,
        "committed": stats.committed,
        "committed_pct": stats.committed_pct,
        "rejected": stats.rejected,
        "rejected_pct": stats.rejected_pct,
        "rejected_by_reason": dict(stats.rejected_by_reason),
        "attempts": {str(n): count for n, count in stats.attempts.items()},
        "retries": asdict(stats.retries),
        "transaction_ms": _latency(stats.transaction_ms),
        "first_completed_at": _iso(stats.first_completed_at),
        "last_completed_at": _iso(stats.last_completed_at),
        "window_s": stats.window_s,
        "throughput_per_s": stats.throughput_per_s,
    }


def format_stats(stats: TransferStats, title: str = "STATS") -> str:
    """The human-readable block, one ``label  value`` line per figure, no trailing newline."""
    lines = [title, line("total", str(stats.total))]
    if not stats.total:
        lines.append("  no transfer results")
        return "\n".join(lines)
    lines += [
        line("committed", f"{stats.committed} ({_fmt_pct(stats.committed_pct)})"),
        _rejected_line(stats.rejected, stats.rejected_pct, stats.rejected_by_reason),
        _attempts_line(stats.attempts),
        _retries_line(stats.retries),
        _latency_line("transaction ms", stats.transaction_ms),
    ]
    lines.append(
        line("window", f"{_iso(stats.first_completed_at)} .. {_iso(stats.last_completed_at)}")
    )
    lines.append(
        line(
            "throughput",
            "-"
            if stats.throughput_per_s is None
            else f"{stats.throughput_per_s:,.1f} transfers/s over {stats.window_s:.3f} s",
        )
    )
    return "\n".join(lines)


def load_stats_as_dict(stats: LoadStats) -> dict[str, Any]:
    """JSON-ready form of ``stats``; every key is always present.

    Keys: ``sent``, ``committed``, ``committed_pct``, ``rejected``, ``rejected_pct``,
    ``rejected_by_reason``, ``failed``, ``failed_pct``, ``attempts``, ``retries``,
    ``transaction_ms``, ``end_to_end_ms``, ``first_sent_at``, ``last_completed_at``,
    ``total_time_s``, ``throughput_per_s``; shapes as in :func:`stats_as_dict`.
    """
    results = stats.results
    return {
        "sent": stats.sent,
        "committed": results.committed,
        "committed_pct": stats.committed_pct,
        "rejected": results.rejected,
        "rejected_pct": stats.rejected_pct,
        "rejected_by_reason": dict(results.rejected_by_reason),
        "failed": stats.failed,
        "failed_pct": stats.failed_pct,
        "attempts": {str(n): count for n, count in results.attempts.items()},
        "retries": asdict(results.retries),
        "transaction_ms": _latency(results.transaction_ms),
        "end_to_end_ms": _latency(stats.end_to_end_ms),
        "first_sent_at": _iso(stats.first_sent_at),
        "last_completed_at": _iso(results.last_completed_at),
        "total_time_s": stats.total_time_s,
        "throughput_per_s": stats.throughput_per_s,
    }


def format_load_stats(stats: LoadStats, title: str = "STATS") -> str:
    """The load run's block, in the same ``label  value`` lines as :func:`format_stats`."""
    results = stats.results
    rate = stats.throughput_per_s
    return "\n".join(
        [
            title,
            line("sent", str(stats.sent)),
            line("committed", f"{results.committed} ({_fmt_pct(stats.committed_pct)})"),
            _rejected_line(results.rejected, stats.rejected_pct, results.rejected_by_reason),
            line("failed", f"{stats.failed} ({_fmt_pct(stats.failed_pct)})  no result"),
            _attempts_line(results.attempts),
            _retries_line(results.retries),
            _latency_line("transaction ms", results.transaction_ms),
            _latency_line("end-to-end ms", stats.end_to_end_ms),
            line(
                "total time",
                "-"
                if stats.total_time_s is None
                else f"{stats.total_time_s:.3f} s (first send .. last result)",
            ),
            line("throughput", "-" if rate is None else f"{rate:,.1f} results/s"),
        ]
    )


# --- shared pieces ---------------------------------------------------------------------


def _rejected_line(rejected: int, pct: float | None, by_reason: dict[str, int]) -> str:
    reasons = "  ".join(f"{reason}={count}" for reason, count in by_reason.items())
    return line("rejected", f"{rejected} ({_fmt_pct(pct)})  {reasons}".rstrip())


def _attempts_line(attempts: dict[int, int]) -> str:
    return line("attempts", "  ".join(f"{n}={count}" for n, count in attempts.items()) or "-")


def _retries_line(retries: RetrySummary) -> str:
    return line(
        "retries",
        f"total={retries.total}  max={retries.max}  "
        f"per_transfer={retries.per_transfer or 0:.4f}  "
        f"retried={retries.retried_transfers} ({_fmt_pct(retries.retried_pct)})",
    )


def _latency_line(label: str, latency: LatencySummary | None) -> str:
    if latency is None:
        return line(label, "-")
    figures = (
        ("min", latency.min),
        ("avg", latency.avg),
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("max", latency.max),
    )
    return line(label, "  ".join(f"{name}={value:.3f}" for name, value in figures))


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _latency(latency: LatencySummary | None) -> dict[str, Any] | None:
    return None if latency is None else asdict(latency)
