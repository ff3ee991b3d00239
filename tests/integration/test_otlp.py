"""OTLP metrics push, against a real server and a local OTLP/HTTP collector: every POST it
receives is decoded as the protobuf the OpenTelemetry Collector decodes, and checked for the
requests the test sent, the workers' memory and who pushed.

Pushes are cumulative, so the test polls until a received push holds every request it sent
(workers report once a second): no sleep decides anything."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from clients import get, poll
from dynocorn import __version__
from dynocorn.metrics.tally import ADVISED_BOUNDS
from server import LISTENING, REPO, Server, running

APP = "testapps:routes"
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: what was posted, to which path, decoded."""

    def __init__(self) -> None:
        self.received: list[tuple[str, ExportMetricsServiceRequest]] = []
        self.lock = threading.Lock()
        self.status = 200  # what it answers: 400 refuses every push (not retried)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest.FromString(body)
                with collector.lock:
                    collector.received.append((self.path, request))
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(collector.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def pushes(self) -> list[tuple[str, ExportMetricsServiceRequest]]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    try:
        yield receiver
    finally:
        receiver.close()


def metrics_of(request: ExportMetricsServiceRequest) -> dict[str, Metric]:
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == "dynocorn"
    return {metric.name: metric for metric in scope_metrics.metrics}


def attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        kind = pair.value.WhichOneof("value")
        assert kind is not None
        found[pair.key] = getattr(pair.value, kind)
    return found


def by_status(request: ExportMetricsServiceRequest) -> dict[int, int]:
    counted = metrics_of(request)["dynocorn.requests"].sum
    return {
        attributes(p.attributes)["http.response.status_code"]: p.as_int for p in counted.data_points
    }


def send_known_requests(server: Server) -> None:
    """7 x 200 on / (each 0.2 s after the router stamped it), 3 x 404."""
    for _ in range(7):
        stamped = str(int(time.time() * 1000) - 200)  # X-Request-Start: epoch milliseconds
        port = server.port
        response = requests.get(
            f"http://127.0.0.1:{port}/", headers={"X-Request-Start": stamped}, timeout=10
        )
        assert response.status_code == 200
    for _ in range(3):
        assert get(server, "/status/404").status_code == 404


def push_with(collector: Collector, counts: dict[int, int]) -> ExportMetricsServiceRequest:
    def latest() -> ExportMetricsServiceRequest | None:
        pushes = collector.pushes()
        return pushes[-1][1] if pushes and by_status(pushes[-1][1]) == counts else None

    poll(latest, timeout=30, what=f"a push counting {counts}")
    found = latest()
    assert found is not None
    return found


def check_requests(request: ExportMetricsServiceRequest) -> None:
    metrics = metrics_of(request)
    duration = metrics["http.server.request.duration"]
    assert duration.unit == "s"
    assert duration.histogram.aggregation_temporality == CUMULATIVE
    points = {
        (a["http.request.method"], a["http.response.status_class"]): point
        for point in duration.histogram.data_points
        if (a := attributes(point.attributes))
    }
    assert set(points) == {("GET", "2xx"), ("GET", "4xx")}
    for key, count in ((("GET", "2xx"), 7), (("GET", "4xx"), 3)):
        point = points[key]
        assert point.count == count and sum(point.bucket_counts) == count
        assert list(point.explicit_bounds) == list(ADVISED_BOUNDS)
        assert len(point.bucket_counts) == len(ADVISED_BOUNDS) + 1
        assert 0 < point.sum < count * 10
        assert not point.HasField("min") and not point.HasField("max")  # not known: not sent
        assert point.start_time_unix_nano < point.time_unix_nano
    (queue,) = metrics["dynocorn.request.queue_time"].histogram.data_points
    assert queue.count == 7 and queue.sum >= 7 * 0.2
    assert list(queue.bucket_counts)[: ADVISED_BOUNDS.index(0.1) + 1] == [0] * 6  # all >= 0.2 s
    recycles = metrics["dynocorn.worker.recycles"].sum
    assert recycles.is_monotonic
    assert {attributes(p.attributes)["cause"]: p.as_int for p in recycles.data_points}["crash"] == 0
    active = metrics["http.server.active_requests"].sum
    assert not active.is_monotonic and [p.as_int for p in active.data_points] == [0]


def check_workers(request: ExportMetricsServiceRequest, workers: int) -> None:
    metrics = metrics_of(request)
    memory = metrics["dynocorn.worker.memory"]
    assert memory.unit == "By"
    seen = {
        (a["slot"], a["kind"]): point.as_int
        for point in memory.gauge.data_points
        if (a := attributes(point.attributes))
    }
    slots = range(1, workers + 1)
    assert set(seen) == {(slot, kind) for slot in slots for kind in ("rss", "pss", "uss")}
    for slot in slots:
        assert 0 < seen[slot, "uss"] <= seen[slot, "pss"] <= seen[slot, "rss"] < 2**31
    states = metrics["dynocorn.workers"].sum.data_points
    assert {attributes(p.attributes)["state"]: p.as_int for p in states}["idle"] == workers
    assert metrics["dynocorn.memory.total"].gauge.data_points[0].as_int > 0


def resource_of(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    return attributes(request.resource_metrics[0].resource.attributes)


def test_pushes_to_the_collector_named_by_the_environment(collector: Collector) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "DYNO": "web.7",
    }
    with running(["-w", "2", APP], workers=2, env=env) as server:
        url = f"{collector.url}/v1/metrics"
        server.wait_for(f"OTLP metrics to: {url} every 0.5 s")
        send_known_requests(server)
        request = push_with(collector, {200: 7, 404: 3})
        check_requests(request)
        check_workers(request, 2)
        resource = resource_of(request)
        assert resource["service.name"] == APP
        assert resource["service.instance.id"] == "web.7"
        assert resource["dynocorn.version"] == __version__
        # One start for every push: a backend sees one series, never a reset.
        pushes = collector.pushes()
        assert {path for path, _ in pushes} == {"/v1/metrics"}
        starts = {
            point.start_time_unix_nano
            for _, pushed in pushes
            for point in metrics_of(pushed)["dynocorn.worker.recycles"].sum.data_points
        }
        assert len(starts) == 1
        assert "OTLP push" not in server.log  # no failure said


def test_pushes_to_the_endpoint_given_by_flag_and_once_more_at_stop(
    collector: Collector,
) -> None:
    """An hour's interval: the one push the test sees is the last, made as the server stops,
    with the final counts."""
    args = ["--otlp-endpoint", collector.url, "--otlp-interval", "3600", "-n", "shop", APP]
    server = Server(args)
    try:
        server.wait_listening(1)
        server.wait_for(f"OTLP metrics to: {collector.url}/v1/metrics every 3600 s")
        send_known_requests(server)
        assert collector.pushes() == []
        assert server.stop() == 0
        request = push_with(collector, {200: 7, 404: 3})
        check_requests(request)
        resource = resource_of(request)
        assert resource["service.name"] == "shop"
        master = int(server.wait_for(LISTENING.pattern)[0].group(2))
        assert resource["service.instance.id"] == f"{socket.gethostname()}:{master}"
        assert len(collector.pushes()) == 1
    finally:
        server.kill_group()


def test_a_refusing_collector_is_one_warning_until_it_takes_a_push(collector: Collector) -> None:
    collector.status = 400
    url = f"{collector.url}/v1/metrics"
    with running(["--otlp-endpoint", url, "--otlp-interval", "0.5", APP]) as server:
        said = server.wait_for(rf"\[WARNING\] OTLP push to {url} failed: (.*)", timeout=30)
        assert "400" in said[0].group(1)  # the exporter's reason, in the master's log
        # One push at a time: the third posted means the second was heard, failed.
        poll(lambda: len(collector.pushes()) >= 3, timeout=30, what="three pushes")
        assert get(server).status_code == 200
        collector.status = 200
        recovered = server.wait_for(rf"OTLP metrics pushed to {url} again, after (\d+) failed")
        assert int(recovered[0].group(1)) >= 3
        assert server.log.count("OTLP push to") == 1


def hidden_extra(tmp_path: Path) -> dict[str, str]:
    """An `opentelemetry` package first on the path, without the SDK: as if the otlp extra
    were not installed."""
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("")
    return {"PYTHONPATH": f"{tmp_path}:{REPO / 'lib'}"}


def test_without_the_extra_the_environment_is_a_warning(tmp_path: Path) -> None:
    env = {**hidden_extra(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    with running([APP], env=env) as server:
        assert get(server).status_code == 200
        warnings = [line for line in server.lines if "OTEL_EXPORTER_OTLP_ENDPOINT" in line]
        assert len(warnings) == 1 and "[WARNING]" in warnings[0]
        assert "pip install 'dynocorn[otlp]'" in warnings[0]
        assert "OTLP metrics to" not in server.log


def test_without_the_extra_the_flag_is_an_error(tmp_path: Path) -> None:
    server = Server(["--otlp-endpoint", "http://127.0.0.1:9", APP], env=hidden_extra(tmp_path))
    try:
        status = server.wait_exit(30)
    finally:
        server.kill_group()
    assert status == 1
    assert server.lines == [
        "Error: otlp_endpoint = 'http://127.0.0.1:9' from command line: needs the otlp "
        "extra, which is not installed: pip install 'dynocorn[otlp]'"
    ]
