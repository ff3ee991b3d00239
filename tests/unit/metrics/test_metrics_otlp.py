"""The snapshot as OTLP metrics data (metrics/otlp.py): names, units, buckets, attributes and
times, checked on the SDK's data and on the protobuf the exporter sends; and a push to a
local collector that takes it, then to one that refuses it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from dynocorn.metrics import otlp
from dynocorn.metrics.exposition import RECYCLE_CAUSES
from dynocorn.metrics.tally import ADVISED_BOUNDS, BOUNDS, ServerTally

START_NS = 1_800_000_000 * 10**9
RESOURCE = {"service.name": "shop", "service.instance.id": "web.1", "dynocorn.version": "0"}


def counts_at(*durations: float) -> list[int]:
    """Counts per bucket of BOUNDS for these durations (what a worker's heartbeat sends)."""
    counts = [0] * (len(BOUNDS) + 1)
    for duration in durations:
        counts[next((i for i, b in enumerate(BOUNDS) if duration <= b), len(BOUNDS))] += 1
    return counts


def snapshot() -> dict[str, Any]:
    tally = ServerTally()
    tally.add(
        {
            "requests": [
                ["GET", 200, [*counts_at(0.0002, 0.003, 0.004, 0.3), 0.3072]],
                ["GET", 404, [*counts_at(0.001), 0.001]],
                ["BREW", 500, [*counts_at(12.0), 12.0]],  # past the last bound: +Inf
            ],
            "queue": [*counts_at(0.02, 0.02), 0.04],
        },
        {},
    )
    tally.recycles["memory"] = 2
    memory = {"rss": 40_000_000, "pss": 30_000_000, "uss": 20_000_000, "swap": 0}
    return {
        "time": START_NS / 1e9 + 90.5,
        "requests": tally.as_json(),
        "active_requests": 1,
        "workers": [
            {"slot": 1, "state": "busy", "memory": memory},
            {"slot": 2, "state": "idle", "memory": {**memory, "uss": 21_000_000}},
            {"slot": 2, "state": "stopping", "memory": memory},  # on its way out: not shown
            {"slot": 3, "state": "booting", "memory": None},  # not measured yet
        ],
        "memory": {"total": 300_000_000, "held": 1, "quota": 512 * 2**20, "budget": None},
        "backlog": 4,
        "master": {"pid": 7, "uptime": 90.5, "memory": {"pss": 25_000_000}},
    }


def metrics(data: MetricsData) -> dict[str, Metric]:
    (resource_metrics,) = data.resource_metrics
    (scope,) = resource_metrics.scope_metrics
    assert scope.scope.name == "dynocorn"
    return {metric.name: metric for metric in scope.metrics}


def histogram_points(metric: Metric) -> Sequence[HistogramDataPoint]:
    assert isinstance(metric.data, Histogram)
    return metric.data.data_points


def number_points(metric: Metric, kind: type[Sum | Gauge]) -> Sequence[NumberDataPoint]:
    assert isinstance(metric.data, kind)
    return metric.data.data_points


def by(points: Sequence[NumberDataPoint], *keys: str) -> dict[Any, float]:
    """Each point's value, by the values of its attributes `keys` (one key: that value)."""
    found: dict[Any, float] = {}
    for point in points:
        attributes = point.attributes or {}
        key = tuple(attributes[k] for k in keys)
        found[key[0] if len(keys) == 1 else key] = point.value
    return found


def test_durations_are_the_advised_buckets_by_method_and_status_class() -> None:
    found = metrics(otlp.metrics_data(snapshot(), RESOURCE, START_NS))
    duration = found["http.server.request.duration"]
    assert duration.unit == "s"
    points = {}
    for point in histogram_points(duration):
        attributes = point.attributes or {}
        points[attributes["http.request.method"], attributes["http.response.status_class"]] = point
    assert set(points) == {("GET", "2xx"), ("GET", "4xx"), ("_OTHER", "5xx")}
    ok = points["GET", "2xx"]
    assert tuple(ok.explicit_bounds) == ADVISED_BOUNDS
    # 0.2 ms, 3 ms and 4 ms are all at or below 5 ms; 0.3 s is in (0.25, 0.5].
    assert list(ok.bucket_counts) == [3, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert ok.count == 4 and ok.sum == pytest.approx(0.3072)
    assert list(points["_OTHER", "5xx"].bucket_counts) == [0] * 14 + [1]  # +Inf
    assert (ok.start_time_unix_nano, ok.time_unix_nano) == (START_NS, START_NS + 90_500_000_000)
    (queue,) = histogram_points(found["dynocorn.request.queue_time"])
    assert (queue.count, list(queue.bucket_counts)[:4]) == (2, [0, 0, 2, 0])


def test_counters_gauges_and_their_attributes() -> None:
    found = metrics(otlp.metrics_data(snapshot(), RESOURCE, START_NS))
    requests = found["dynocorn.requests"]
    assert isinstance(requests.data, Sum) and requests.data.is_monotonic
    by_status = by(number_points(requests, Sum), "http.response.status_code")
    assert by_status == {200: 4, 404: 1, 500: 1}
    by_cause = by(number_points(found["dynocorn.worker.recycles"], Sum), "cause")
    assert by_cause == {**dict.fromkeys(RECYCLE_CAUSES, 0), "memory": 2}  # each, from 0
    active = found["http.server.active_requests"]
    assert isinstance(active.data, Sum) and not active.data.is_monotonic
    assert [p.value for p in active.data.data_points] == [1]
    states = by(number_points(found["dynocorn.workers"], Sum), "state")
    assert states == {"booting": 1, "idle": 1, "busy": 1, "stopping": 1}
    memory = found["dynocorn.worker.memory"]
    assert memory.unit == "By"
    shown = by(number_points(memory, Gauge), "slot", "kind")
    assert shown[2, "uss"] == 21_000_000  # the serving worker of slot 2, not the stopping one
    assert set(shown) == {(slot, kind) for slot in (1, 2) for kind in ("rss", "pss", "uss")}
    for name, value in (
        ("dynocorn.memory.total", 300_000_000),
        ("dynocorn.memory.quota", 512 * 2**20),
        ("dynocorn.listen_backlog", 4),
        ("dynocorn.master.memory", 25_000_000),
    ):
        assert [p.value for p in number_points(found[name], Gauge)] == [value], name


def test_what_is_not_known_is_not_sent() -> None:
    quiet = snapshot()
    quiet["requests"] = ServerTally().as_json()
    quiet["memory"] = {"total": None, "held": None, "quota": None, "budget": None}
    quiet["backlog"] = None  # unix sockets only
    quiet["master"]["memory"] = None
    found = metrics(otlp.metrics_data(quiet, RESOURCE, START_NS))
    assert "http.server.request.duration" not in found  # no request yet: no series
    for name in ("memory.total", "memory.quota", "listen_backlog", "master.memory"):
        assert f"dynocorn.{name}" not in found
    (queue,) = histogram_points(found["dynocorn.request.queue_time"])
    assert queue.count == 0  # always there, as in /metrics


def test_the_protobuf_has_no_min_or_max_and_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    # OTEL_RESOURCE_ATTRIBUTES adds attributes; ours win over it.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=x")
    request = encode_metrics(otlp.metrics_data(snapshot(), RESOURCE, START_NS))
    (resource_metrics,) = request.resource_metrics
    resource = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
    assert resource["service.name"] == "shop" and resource["service.instance.id"] == "web.1"
    assert resource["deployment.environment"] == "prod"
    (scope,) = resource_metrics.scope_metrics
    (duration,) = [m for m in scope.metrics if m.name == "http.server.request.duration"]
    for point in duration.histogram.data_points:
        assert not point.HasField("min") and not point.HasField("max")
        assert point.start_time_unix_nano == START_NS


class Collector:
    """A local OTLP/HTTP endpoint answering `status` to every POST."""

    def __init__(self, status: int) -> None:
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def sdk_log() -> Iterator[None]:
    """push() takes over the SDK's logger (it runs in a process of its own): give it back."""
    logger = logging.getLogger("opentelemetry")
    handlers, propagate = list(logger.handlers), logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.propagate = propagate


@pytest.mark.usefixtures("sdk_log")
@pytest.mark.parametrize(("status", "taken"), [(200, True), (400, False)])
def test_push_says_none_or_why_not(status: int, taken: bool) -> None:
    collector = Collector(status)
    try:
        said = otlp.push(snapshot(), collector.url, RESOURCE, START_NS)
    finally:
        collector.close()
    assert len(collector.bodies) == 1  # a 400 is not retried
    if taken:
        assert said is None
    else:
        assert said is not None and "400" in said
