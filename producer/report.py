"""The page of ``producer report`` and ``producer load --wait --report``: one
self-contained HTML file.

The page shows a window of ``transfer_results`` (``--since`` / ``--until``, default:
everything):

- the STATS numbers, exactly what ``producer stats --json`` prints for the same window
  (both come from :func:`producer.summary.summarize_table`; the page also carries them
  as JSON in ``<script id="stats-json" type="application/json">`` so a machine can
  check them);
- throughput over time by outcome (committed and each rejection reason, stacked);
- transaction and end-to-end latency percentiles (p50, p99) over time;
- a histogram of attempts per transfer and the rejections by reason;
- the run's settings (for ``load --report``: iterations, threads, accounts, the queue).

Charts are plotly's, with plotly.js inlined once (about 4.6 MB), so the file opens
with no network. The time series are aggregated by the database in the same bounded
primary-key ranges as ``stats`` (:mod:`producer.keyranges`), one row per time bucket
and outcome or latency bin: the percentiles over time are read from 1 % log bins
(:data:`producer.summary.BIN`, plotted at the bin's geometric middle, so within 0.5 %),
while the STATS block's are exact.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from producer.keyranges import walk
from producer.percentiles import nearest_rank
from producer.stats import TransferStats
from producer.stats_format import format_stats, stats_as_dict
from producer.summary import BIN, CHUNK, Window, summarize_table
from worker.db import connect
from worker.settings import Settings

TARGET_BUCKETS = 120
"""About this many points per time series (the bucket width follows the window)."""

_E2E_MS: LiteralString = "extract(epoch FROM completed_at - enqueued_at) * 1000"
_E2E_BIN: LiteralString = (
    "CASE WHEN " + _E2E_MS + " > 0 THEN floor(ln(" + _E2E_MS + ") * 100)::int ELSE -100000 END"
)
_BUCKET: LiteralString = "floor(extract(epoch FROM completed_at) / %(width)s)::bigint"
_OUTCOMES: LiteralString = (
    "SELECT " + _BUCKET + ", status, reason, count(*) FROM transfer_results"
    " WHERE {range} AND {window} GROUP BY 1, 2, 3"
)
_TX_BINS: LiteralString = (
    "SELECT " + _BUCKET + ", " + BIN + ", count(*) FROM transfer_results"
    " WHERE {range} AND {window} AND status = 'committed' AND transaction_ms IS NOT NULL"
    " GROUP BY 1, 2"
)
_E2E_BINS: LiteralString = (
    "SELECT " + _BUCKET + ", " + _E2E_BIN + ", count(*) FROM transfer_results"
    " WHERE {range} AND {window} AND enqueued_at IS NOT NULL GROUP BY 1, 2"
)


def build_report(
    settings: Settings,
    window: Window,
    *,
    title: str,
    run_settings: Mapping[str, Any],
) -> str:
    """The HTML page for the results in ``window``.

    Raises ``ImportError`` when plotly is not installed (the ``producer`` extra),
    before any query.
    """
    import plotly  # type: ignore[import-untyped]  # noqa: F401 - fail before any query

    with connect(settings, autocommit=True) as conn:
        stats = summarize_table(conn, window)
        series = _series(conn, window, stats)
    context = {
        "window": f"{_plain(window.since and window.since.isoformat())} .."
        f" {_plain(window.until and window.until.isoformat())} (completed_at, UTC)",
        "database": "Aurora DSQL" if settings.dsql_endpoint else "PostgreSQL",
        "queue_url": settings.queue_url,
        **run_settings,
    }
    return _page(title, stats, series, context)


# --- the time series, aggregated by the database ---------------------------------------


def _series(conn: psycopg.Connection[Any], window: Window, stats: TransferStats) -> dict[str, Any]:
    first, last = stats.first_completed_at, stats.last_completed_at
    if first is None or last is None:
        return {"width_s": 1, "outcomes": {}, "transaction_ms": {}, "end_to_end_ms": {}}
    span = max((last - first).total_seconds(), 1.0)
    width = _nice_width(span / TARGET_BUCKETS)
    within, window_params = window.where()
    outcomes: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    tx_bins: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    e2e_bins: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for current in walk(conn, "transfer_results", "transfer_id", CHUNK):
        condition, params = current.where("transfer_id")
        params.update(window_params, width=width)
        for bucket, status, reason, count in conn.execute(
            sql.SQL(_OUTCOMES).format(range=condition, window=within), params
        ):
            outcomes["committed" if status == "committed" else reason or "unknown"][bucket] += count
        for query, target in ((_TX_BINS, tx_bins), (_E2E_BINS, e2e_bins)):
            for bucket, bin_, count in conn.execute(
                sql.SQL(query).format(range=condition, window=within), params
            ):
                target[bucket][bin_] += count
    return {
        "width_s": width,
        "outcomes": {name: dict(by_bucket) for name, by_bucket in outcomes.items()},
        "transaction_ms": _percentiles_over_time(tx_bins),
        "end_to_end_ms": _percentiles_over_time(e2e_bins),
    }


def _nice_width(seconds: float) -> float:
    """The smallest of 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1 h, ... >= seconds."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if width >= seconds:
            return width
    return 86400 * math.ceil(seconds / 86400)


def _percentiles_over_time(bins: Mapping[int, Mapping[int, int]]) -> dict[str, dict[int, float]]:
    """p50 and p99 per bucket from its histogram, at each bin's geometric middle."""
    out: dict[str, dict[int, float]] = {"p50": {}, "p99": {}}
    for bucket, histogram in bins.items():
        n = sum(histogram.values())
        for name, p in (("p50", 50), ("p99", 99)):
            rank, seen = nearest_rank(p, n), 0
            for bin_ in sorted(histogram):
                seen += histogram[bin_]
                if seen >= rank:
                    if bin_ > -100000:  # zero has no place on a log axis: left out
                        out[name][bucket] = math.exp((bin_ + 0.5) / 100)
                    break
    return out


# --- the page ------------------------------------------------------------------------


def _page(title: str, stats: TransferStats, series: dict[str, Any], context: dict[str, Any]) -> str:
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    width = series["width_s"]

    def times(buckets: Mapping[int, Any]) -> list[datetime]:
        return [datetime.fromtimestamp(b * width, UTC) for b in sorted(buckets)]

    # A fixed size: plotly sizes a chart when its script runs, before the page's layout
    # is final, so a "responsive" first chart can come out wider than its column.
    layout = {
        "template": "plotly_white",
        "width": 660,
        "height": 360,
        "margin": {"t": 50, "l": 60, "r": 20},
    }
    throughput = go.Figure(layout={**layout, "title": f"results per second ({width:g} s buckets)"})
    for name, by_bucket in sorted(series["outcomes"].items(), key=lambda kv: kv[0] != "committed"):
        throughput.add_bar(
            name=name, x=times(by_bucket), y=[by_bucket[b] / width for b in sorted(by_bucket)]
        )
    throughput.update_layout(barmode="stack", yaxis_title="per second", showlegend=True)

    latency = go.Figure(layout={**layout, "title": "latency percentiles over time (ms)"})
    for key, label in (("transaction_ms", "transaction"), ("end_to_end_ms", "end to end")):
        for p in ("p50", "p99"):
            points = series[key][p]
            latency.add_scatter(
                name=f"{label} {p}", mode="lines+markers", x=times(points),
                y=[points[b] for b in sorted(points)],
            )  # fmt: skip
    latency.update_layout(yaxis_type="log", yaxis_title="ms")

    attempts = go.Figure(layout={**layout, "title": "attempts per transfer"})
    attempts.add_bar(x=[str(n) for n in stats.attempts], y=list(stats.attempts.values()))
    attempts.update_layout(xaxis_title="attempts", yaxis_title="transfers", xaxis_type="category")

    reasons = go.Figure(layout={**layout, "title": "rejections by reason"})
    reasons.add_bar(
        x=list(stats.rejected_by_reason.values()),
        y=list(stats.rejected_by_reason),
        orientation="h",
        marker_color="#d62728",
    )

    figures = [throughput, latency, attempts, reasons]
    charts = "\n".join(
        f'<div class="chart">{fig.to_html(full_html=False, include_plotlyjs=i == 0)}</div>'
        for i, fig in enumerate(figures)
    )
    data = stats_as_dict(stats)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_plain(v))}</td></tr>"
        for k, v in context.items()
    )
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    payload = json.dumps(data).replace("</", "<\\/")  # cannot end the script element
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} .sub {{ color: #666; margin-bottom: 16px; }}
.top {{ display: flex; gap: 32px; flex-wrap: wrap; }}
pre {{ background: #f6f6f6; padding: 12px; border-radius: 6px; font-size: 13px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th {{ text-align: left; padding: 2px 12px 2px 0; color: #555; font-weight: normal; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="sub">generated {generated}; {stats.total:,} results</div>
<div class="top">
<div><h2>STATS</h2><pre id="stats">{html.escape(format_stats(stats))}</pre></div>
<div><h2>settings</h2><table id="settings">{rows}</table></div>
</div>
<div class="grid">
{charts}
</div>
<script id="stats-json" type="application/json">{payload}</script>
</body></html>
"""


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


def load_window(started_at: datetime, last_completed_at: datetime | None) -> Window:
    """The window of a load run: from its first send to just after its last result."""
    end = (last_completed_at or datetime.now(UTC)) + timedelta(milliseconds=1)
    return Window(started_at, end)
