"""The master's snapshot (status.py) as OpenTelemetry metrics, and their push to an OTLP/HTTP
collector with the SDK's exporter: the metrics /metrics serves (exposition.py), under their
OpenTelemetry names (`http.server.request.duration` in seconds, with the advised buckets).

Imported only in the short-lived process the master forks for each push (otlp_push.py): the
SDK and the exporter take about 12 MB and 0.1 s of CPU to import, which the master, and
every worker it forks, never pays. No MeterProvider either: its reader is a thread, and the
snapshot already holds the sums, so the data is built here directly, cumulative since the
server started, as an asynchronous instrument would report it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes

from dynocorn import __version__
from dynocorn.metrics.exposition import MEMORY_KINDS, RECYCLE_CAUSES, WORKER_STATES
from dynocorn.metrics.tally import ADVISED_BOUNDS, Histogram

SCOPE = InstrumentationScope("dynocorn", __version__)
CUMULATIVE = AggregationTemporality.CUMULATIVE
# The tally keeps buckets, not extremes: None leaves min and max out of the protobuf
# (optional fields), where the SDK's "unknown" (inf, -inf) would be sent as values.
UNKNOWN = cast(float, None)


class Stamps:
    """The two times of every point: the server's start (the start of every cumulative
    series, the same at each push so that a backend sees no reset) and the snapshot's."""

    def __init__(self, start_ns: int, snapshot: Mapping[str, Any]) -> None:
        self.start_ns = start_ns
        self.time_ns = max(int(snapshot["time"] * 1e9), start_ns + 1)

    def number(self, value: float, attributes: Attributes = None) -> NumberDataPoint:
        return NumberDataPoint(attributes or {}, self.start_ns, self.time_ns, value)

    def histogram(self, histogram: Histogram, attributes: Attributes = None) -> HistogramDataPoint:
        counts, below = [], 0
        for _, running in histogram.cumulative(ADVISED_BOUNDS):
            counts.append(running - below)
            below = running
        return HistogramDataPoint(
            attributes=attributes or {},
            start_time_unix_nano=self.start_ns,
            time_unix_nano=self.time_ns,
            count=histogram.count,
            sum=histogram.total,
            bucket_counts=counts,
            explicit_bounds=ADVISED_BOUNDS,
            min=UNKNOWN,
            max=UNKNOWN,
        )


def _counter(name: str, text: str, unit: str, points: list[NumberDataPoint]) -> Metric:
    return Metric(name, text, unit, Sum(points, CUMULATIVE, is_monotonic=True))


def _up_down(name: str, text: str, unit: str, points: list[NumberDataPoint]) -> Metric:
    return Metric(name, text, unit, Sum(points, CUMULATIVE, is_monotonic=False))


def _duration_attributes(row: Mapping[str, Any]) -> Attributes:
    # The status class, as /metrics labels it: a series per class, not per code.
    return {"http.request.method": row["method"], "http.response.status_class": row["status_class"]}


def _request_metrics(requests: Mapping[str, Any], at: Stamps) -> Iterator[Metric]:
    durations = [
        at.histogram(Histogram.from_json(row), _duration_attributes(row))
        for row in requests["durations"]
    ]
    if durations:
        data = HistogramData(durations, CUMULATIVE)
        yield Metric("http.server.request.duration", "Duration of HTTP server requests.", "s", data)
    queue = at.histogram(Histogram.from_json(requests["queue"]))
    yield Metric(
        "dynocorn.request.queue_time",
        "Time from the router (X-Request-Start) to a worker starting on the request.",
        "s",
        HistogramData([queue], CUMULATIVE),
    )
    by_status = [
        at.number(count, {"http.response.status_code": int(status)})
        for status, count in requests["by_status"].items()
    ]
    text = "Requests answered, by status code."
    yield _counter("dynocorn.requests", text, "{request}", by_status)
    counted = requests["recycles"]
    recycles = [
        at.number(counted.get(cause, 0), {"cause": cause})
        for cause in sorted({*RECYCLE_CAUSES, *counted})
    ]
    text = "Workers that ended, by cause."
    yield _counter("dynocorn.worker.recycles", text, "{worker}", recycles)


def _worker_metrics(snapshot: Mapping[str, Any], at: Stamps) -> Iterator[Metric]:
    active = [at.number(snapshot["active_requests"])]
    text = "Number of active HTTP server requests."
    yield _up_down("http.server.active_requests", text, "{request}", active)
    states = dict.fromkeys(WORKER_STATES, 0)
    for row in snapshot["workers"]:
        states[row["state"]] = states.get(row["state"], 0) + 1
    workers = [at.number(count, {"state": state}) for state, count in states.items()]
    yield _up_down("dynocorn.workers", "Worker processes, by state.", "{worker}", workers)
    memory = [
        at.number(row["memory"][kind], {"slot": row["slot"], "kind": kind})
        for row in snapshot["workers"]
        if row["memory"] is not None and row["slot"] is not None and row["state"] != "stopping"
        for kind in MEMORY_KINDS
    ]
    text = "Memory of each worker process (rss, pss, uss), by its stable slot number."
    yield Metric("dynocorn.worker.memory", text, "By", Gauge(memory))


def _dyno_metrics(snapshot: Mapping[str, Any], at: Stamps) -> Iterator[Metric]:
    dyno = snapshot["memory"]
    for name, key, text in (
        ("dynocorn.memory.total", "total", "The dyno's memory in use (rss+cache+swap)."),
        ("dynocorn.memory.quota", "quota", "The dyno's memory quota."),
    ):
        if dyno[key] is not None:
            yield Metric(name, text, "By", Gauge([at.number(dyno[key])]))
    if snapshot["backlog"] is not None:
        text = "Connections the kernel accepted that wait for a worker."
        points = [at.number(snapshot["backlog"])]
        yield Metric("dynocorn.listen_backlog", text, "{connection}", Gauge(points))
    master = snapshot["master"]["memory"]
    if master is not None:
        points = [at.number(master["pss"])]
        yield Metric("dynocorn.master.memory", "The master's PSS.", "By", Gauge(points))


def metrics_data(
    snapshot: Mapping[str, Any], resource: Mapping[str, str], start_ns: int
) -> MetricsData:
    """The snapshot as one OTLP export; `resource` adds to (and wins over) what
    OTEL_RESOURCE_ATTRIBUTES says, as the SDK's Resource.create merges them."""
    at = Stamps(start_ns, snapshot)
    metrics = [
        *_request_metrics(snapshot["requests"], at),
        *_worker_metrics(snapshot, at),
        *_dyno_metrics(snapshot, at),
    ]
    scope = ScopeMetrics(SCOPE, metrics, "")
    return MetricsData([ResourceMetrics(Resource.create(dict(resource)), [scope], "")])


class _Said(logging.Handler):
    """What the exporter logged: why a push failed is only in its log lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def push(
    snapshot: Mapping[str, Any], url: str, resource: Mapping[str, str], start_ns: int
) -> str | None:
    """Post the snapshot to `url`; None when the collector took it, else why not. The
    exporter reads OpenTelemetry's other variables itself (OTEL_EXPORTER_OTLP_HEADERS,
    _TIMEOUT, _COMPRESSION, _CERTIFICATE and their _METRICS_ forms)."""
    said = _Said()
    sdk_log = logging.getLogger("opentelemetry")
    sdk_log.addHandler(said)
    sdk_log.propagate = False  # said by the master, in its log's format, not on stderr
    exporter = OTLPMetricExporter(endpoint=url)
    try:
        result = exporter.export(metrics_data(snapshot, resource, start_ns))
    finally:
        exporter.shutdown()
    if result is MetricExportResult.SUCCESS:
        return None
    if not said.lines:
        return "the exporter gave no reason"
    # The last line says that it gave up; the first, after retries, what went wrong.
    return "; ".join(dict.fromkeys((said.lines[-1], said.lines[0])))
