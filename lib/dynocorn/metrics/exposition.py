"""The master's snapshot (status.py) as Prometheus/OpenMetrics metrics, through
prometheus_client's exposition: no multiprocess directory, since the master holds the sums.

Names follow OpenTelemetry's HTTP semantic conventions where they have one, as their
Prometheus translation spells them (`http.server.request.duration` in seconds becomes
`http_server_request_duration_seconds`, attribute `http.request.method` the label
`http_request_method`); the rest are dynocorn's own, prefixed `dynocorn_`. The duration
histogram's buckets are OpenTelemetry's advised ones, 5 ms to 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from dynocorn.metrics.tally import ADVISED_BOUNDS, Histogram

MEMORY_KINDS = ("rss", "pss", "uss")
# Why workers ended (worker_exits.py's causes), each always exposed, at 0 until it happens:
# a rate() over a series that appears only at its first event misses that event.
RECYCLE_CAUSES = ("max_requests", "lifetime", "memory", "timeout", "crash", "oom", "killed")
WORKER_STATES = ("booting", "idle", "busy", "stopping")  # status.py's, each always exposed


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in histogram.cumulative(ADVISED_BOUNDS)
    ]


def _request_metrics(requests: dict[str, Any]) -> Iterator[Metric]:
    duration = HistogramMetricFamily(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
        labels=["http_request_method", "http_response_status_class"],
        unit="seconds",
    )
    for row in requests["durations"]:
        histogram = Histogram.from_json(row)
        duration.add_metric(
            [row["method"], row["status_class"]], _buckets(histogram), histogram.total
        )
    yield duration
    queue = Histogram.from_json(requests["queue"])
    queue_family = HistogramMetricFamily(
        "dynocorn_request_queue_time_seconds",
        "Time from the router (X-Request-Start) to a worker starting on the request.",
        unit="seconds",
    )
    queue_family.add_metric([], _buckets(queue), queue.total)
    yield queue_family
    by_status = CounterMetricFamily(
        "dynocorn_requests",
        "Requests answered, by status code.",
        labels=["http_response_status_code"],
    )
    for status, count in requests["by_status"].items():
        by_status.add_metric([status], count)
    yield by_status
    recycles = CounterMetricFamily(
        "dynocorn_worker_recycles", "Workers that ended, by cause.", labels=["cause"]
    )
    counted = requests["recycles"]
    for cause in sorted({*RECYCLE_CAUSES, *counted}):
        recycles.add_metric([cause], counted.get(cause, 0))
    yield recycles


def _worker_metrics(snapshot: dict[str, Any]) -> Iterator[Metric]:
    active = GaugeMetricFamily(
        "http_server_active_requests", "Number of active HTTP server requests."
    )
    active.add_metric([], snapshot["active_requests"])
    yield active
    workers = GaugeMetricFamily("dynocorn_workers", "Worker processes, by state.", labels=["state"])
    states = dict.fromkeys(WORKER_STATES, 0)
    for row in snapshot["workers"]:
        states[row["state"]] = states.get(row["state"], 0) + 1
    for state, count in states.items():
        workers.add_metric([state], count)
    yield workers
    memory = GaugeMetricFamily(
        "dynocorn_worker_memory_bytes",
        "Memory of each worker process (rss, pss, uss), by its stable slot number.",
        labels=["slot", "kind"],
        unit="bytes",
    )
    for row in snapshot["workers"]:
        figures = row["memory"]
        if figures is None or row["slot"] is None or row["state"] == "stopping":
            continue
        for kind in MEMORY_KINDS:
            memory.add_metric([str(row["slot"]), kind], figures[kind])
    yield memory


def _dyno_metrics(snapshot: dict[str, Any]) -> Iterator[Metric]:
    dyno = snapshot["memory"]
    for name, key, text in (
        ("dynocorn_memory_total_bytes", "total", "The dyno's memory in use (rss+cache+swap)."),
        ("dynocorn_memory_quota_bytes", "quota", "The dyno's memory quota."),
    ):
        if dyno[key] is not None:
            yield GaugeMetricFamily(name, text, value=dyno[key], unit="bytes")
    if snapshot["backlog"] is not None:
        yield GaugeMetricFamily(
            "dynocorn_listen_backlog",
            "Connections the kernel accepted that wait for a worker.",
            value=snapshot["backlog"],
        )
    master = snapshot["master"]["memory"]
    if master is not None:
        yield GaugeMetricFamily(
            "dynocorn_master_memory_bytes", "The master's PSS.", value=master["pss"], unit="bytes"
        )


class SnapshotCollector(Collector):
    """Hands prometheus_client the metrics of one snapshot, taken when it collects."""

    def __init__(self, take_snapshot: Any) -> None:
        self.take_snapshot = take_snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self.take_snapshot()
        yield from _request_metrics(snapshot["requests"])
        yield from _worker_metrics(snapshot)
        yield from _dyno_metrics(snapshot)


def registry_for(take_snapshot: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(take_snapshot))
    return registry


def expose(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition for a scraper's Accept header: OpenMetrics when it asks, else
    Prometheus's text format. (body, content type)"""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
