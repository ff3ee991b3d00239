"""--metrics-bind against a real server: a scrape parsed with prometheus_client's own
parsers, its numbers checked against the requests sent, through worker recycling."""

from __future__ import annotations

import re

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from clients import get, poll
from server import Server, running
from worker_classes import WORKER_CLASSES

METRICS_AT = r"Metrics at: (http://\S+)"


def metrics_url(server: Server) -> str:
    return server.wait_for(METRICS_AT)[0].group(1)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)  # type: ignore[no-any-return]


DURATION = "http_server_request_duration_seconds"


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_a_scrape_counts_every_request_through_recycling(worker_args: list[str]) -> None:
    # max-requests 5: the 23 requests pass through several workers, each recycled; the
    # counts of the ones gone must be in the scrape all the same.
    args = [*worker_args, "-w", "2", "--max-requests", "5", "--metrics-bind", "127.0.0.1:0"]
    with running([*args, "testapps:routes"], workers=2) as srv:
        url = metrics_url(srv)
        for _ in range(15):
            assert get(srv, "/").status_code == 200
        for _ in range(5):
            assert get(srv, "/crash").status_code == 500
        for _ in range(3):
            assert requests.post(f"http://127.0.0.1:{srv.port}/echo", data=b"x", timeout=10).ok
        srv.wait_for(r"Autorestarting worker after current request", count=2)

        def all_counted() -> bool:
            # Each worker sends its counts with its own heartbeat, and the master counts an
            # exit when it reaps the worker: wait for every one of them.
            samples = scrape(url)
            return (
                value(samples, "dynocorn_requests_total", http_response_status_code="200") == 18
                and value(samples, "dynocorn_requests_total", http_response_status_code="500") == 5
                and value(samples, "dynocorn_worker_recycles_total", cause="max_requests") >= 2
            )

        poll(all_counted, 20, "every answer and two recycles counted")
        samples = scrape(url)
        get_2xx = {"http_request_method": "GET", "http_response_status_class": "2xx"}
        assert value(samples, f"{DURATION}_count", **get_2xx) == 15
        get_5xx = {"http_request_method": "GET", "http_response_status_class": "5xx"}
        assert value(samples, f"{DURATION}_count", **get_5xx) == 5
        post_2xx = {"http_request_method": "POST", "http_response_status_class": "2xx"}
        assert value(samples, f"{DURATION}_count", **post_2xx) == 3
        assert value(samples, "dynocorn_requests_total", http_response_status_code="500") == 5
        # OpenTelemetry's advised buckets, cumulative, ending at +Inf with the count.
        bounds = sorted(
            float(labels[-1][1])
            for (name, labels) in samples
            if name == f"{DURATION}_bucket" and dict(labels).get("http_request_method") == "GET"
            and dict(labels)["http_response_status_class"] == "2xx" and labels[-1][1] != "+Inf"
        )  # fmt: skip
        assert bounds == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                          5.0, 7.5, 10.0]  # fmt: skip
        assert value(samples, f"{DURATION}_bucket", **get_2xx, le="+Inf") == 15
        assert 0 < value(samples, f"{DURATION}_sum", **get_2xx) < 15
        assert value(samples, "dynocorn_worker_recycles_total", cause="max_requests") >= 2
        assert value(samples, "http_server_active_requests") == 0
        # Memory of each serving worker, by its slot.
        for slot in ("1", "2"):
            for kind in ("rss", "pss", "uss"):
                assert value(samples, "dynocorn_worker_memory_bytes", slot=slot, kind=kind) > 0
        assert value(samples, "dynocorn_listen_backlog") == 0
        assert value(samples, "dynocorn_memory_total_bytes") > 0


def test_openmetrics_when_asked_and_errors_for_other_paths() -> None:
    args = ["--metrics-bind", "127.0.0.1:0", "testapps:routes"]
    with running(args) as srv:
        url = metrics_url(srv)
        assert get(srv, "/").status_code == 200
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        response = requests.get(url, headers=accept, timeout=10)
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")
        families = openmetrics_families(response.text)  # type: ignore[no-untyped-call]
        names = {family.name for family in families}
        assert {"http_server_request_duration_seconds", "dynocorn_requests"} <= names
        base = url.removesuffix("/metrics")
        assert requests.get(f"{base}/other", timeout=10).status_code == 404
        assert requests.post(url, timeout=10).status_code == 405
        assert requests.head(url, timeout=10).status_code == 200
        assert re.search(r"Metrics at: http://127\.0\.0\.1:\d+/metrics", srv.log)


def test_a_taken_metrics_port_stops_the_server_with_one_line() -> None:
    with running(["--metrics-bind", "127.0.0.1:0", "testapps:routes"]) as first:
        port = metrics_url(first).rsplit(":", 1)[1].split("/")[0]
        second = Server(["--metrics-bind", f"127.0.0.1:{port}", "testapps:routes"])
        try:
            assert second.wait_exit(30) == 1
        finally:
            second.kill_group()
        errors = [line for line in second.lines if "[ERROR]" in line]
        assert len(errors) == 1 and f"metrics_bind '127.0.0.1:{port}': cannot listen" in errors[0]
