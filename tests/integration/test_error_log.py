"""The error log as gunicorn config hooks use it: `server.log.info("... %s", value)`."""

from __future__ import annotations

from pathlib import Path

import requests

from server import running


def test_hooks_log_with_printf_style_arguments(tmp_path: Path) -> None:
    config = tmp_path / "conf.py"
    config.write_text(
        "def when_ready(server):\n"
        "    server.log.info('x %s', 1)\n"
        "def post_fork(server, worker):\n"
        "    server.log.info('Worker spawned (pid: %s)', worker.pid)\n"
        "def post_worker_init(worker):\n"
        "    worker.log.warning('%(who)s is ready', {'who': 'the worker'})\n"
        "def pre_request(worker, req):\n"
        "    try:\n"
        "        raise LookupError('no such thing')\n"
        "    except LookupError:\n"
        "        worker.log.error('%s %s failed', req.method, req.path, exc_info=True)\n"
    )
    with running(["-c", str(config), "testapps:hello"]) as srv:
        assert requests.get(f"http://127.0.0.1:{srv.port}/x", timeout=5).status_code == 200
        pid = srv.worker_pids()[0]
        srv.wait_for(r"\[INFO\] x 1$")
        srv.wait_for(rf"\[INFO\] Worker spawned \(pid: {pid}\)$")
        srv.wait_for(r"\[WARNING\] the worker is ready$")
        srv.wait_for(r"\[ERROR\] GET /x failed$")
        srv.wait_for(r"^LookupError: no such thing$")
    assert "Traceback" in srv.log
    assert "TypeError" not in srv.log
