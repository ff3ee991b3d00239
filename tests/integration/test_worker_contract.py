"""What every worker class promises the app, and what a user's worker class may rely on."""

from __future__ import annotations

import json

import pytest
import requests

from rawhttp import exchange
from server import running
from worker_classes import WORKER_CLASSES


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_wsgi_run_once_is_false(worker_args: list[str]) -> None:
    # Every class serves many requests per process, so no app may assume it runs once.
    with running([*worker_args, "-w", "1", "testapps:routes"]) as srv:
        seen = requests.get(f"http://127.0.0.1:{srv.port}/echo", timeout=10).json()
    assert seen["run_once"] is False
    assert seen["multiprocess"] is False  # one worker


def test_a_minimal_subclass_of_the_documented_base_class_serves() -> None:
    """custom_worker.Minimal follows only the contract in dynocorn.workers' docstring."""
    with running(["-k", "custom_worker.Minimal", "-w", "2", "testapps:routes"], workers=2) as srv:
        srv.wait_for(r"minimal worker class is serving", count=2)
        base = f"http://127.0.0.1:{srv.port}"
        assert requests.get(f"{base}/", timeout=10).text == "Hello, World!"
        seen = requests.post(f"{base}/echo?x=1", data=b"body", timeout=10).json()
        assert (seen["method"], seen["query"], seen["body"]) == ("POST", "x=1", "body")
        assert seen["multithread"] is False and seen["multiprocess"] is True
        # Keep-alive and pipelining come from the shared HTTP layer.
        pipelined = b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % n for n in range(3))
        responses, _ = exchange(srv.port, pipelined, responses=3)
        assert [json.loads(r.body)["query"] for r in responses] == ["n=0", "n=1", "n=2"]
        # So do refusals, and an app that raises.
        refused, closed = exchange(srv.port, b"GET / HTTP/1.1\r\nHost : h\r\n\r\n")
        assert refused[0].status == 400 and closed
        assert requests.get(f"{base}/crash", timeout=10).status_code == 500
        assert requests.get(f"{base}/", timeout=10).status_code == 200
    assert srv.process.returncode == 0  # TERM: both workers left their loops
    srv.wait_for(r"Worker exiting \(pid: \d+\)", count=2)
