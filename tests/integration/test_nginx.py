"""deploy/nginx/ for real: Debian's nginx in front of dynocorn on a unix socket, with the
server block as shipped (only its paths and port changed): the proxy headers reach the app,
static files come from nginx, and a HUP or max-requests recycling under load through nginx
fails no request. `make test` installs nginx (Makefile) where it can."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from clients import SteadyLoad, poll
from honcho_runs import free_port
from server import REPO, Server, running

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (make test installs it)"
)

SITE = REPO / "deploy" / "nginx" / "dynocorn.conf"
MAIN = """\
worker_processes 1;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
"""


@contextmanager
def nginx_in_front(tmp: Path, *socket_paths: str) -> Iterator[int]:
    """nginx with the shipped server block, on a free loopback port: that port. Its
    upstream is each of `socket_paths` (the block lists one; more are listed the same way)."""
    port = free_port()
    site = SITE.read_text()
    upstream = "server unix:/run/dynocorn.sock fail_timeout=0;"
    servers = "\n    ".join(f"server unix:{path} fail_timeout=0;" for path in socket_paths)
    for shipped, here in (
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        (upstream, servers),
        ("/srv/app/static/", f"{tmp}/static/"),
    ):
        assert shipped in site
        site = site.replace(shipped, here)
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(MAIN.format(tmp=tmp))
    (tmp / "static").mkdir()
    (tmp / "static" / "hello.txt").write_text("from nginx\n")
    assert NGINX is not None
    with (tmp / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    try:
        poll(lambda: _answers(port) or process.poll() is not None, 15, "nginx listening")
        assert process.poll() is None, (tmp / "stderr.log").read_text()
        yield port
    finally:
        process.terminate()
        process.wait(15)


def _answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/static/hello.txt", timeout=2)
        return True
    except requests.RequestException:
        return False


@contextmanager
def behind_nginx(tmp_path: Path, *args: str, workers: int = 2) -> Iterator[tuple[Server, int]]:
    socket_path = str(tmp_path / "app.sock")
    arguments = ["-w", str(workers), "--keep-alive", "75", *args, "testapps:routes"]
    with (
        running(arguments, workers=workers, bind=f"unix:{socket_path}") as server,
        nginx_in_front(tmp_path, socket_path) as port,
    ):
        yield server, port


def test_proxy_headers_reach_the_app_and_nginx_serves_static_files(tmp_path: Path) -> None:
    with behind_nginx(tmp_path) as (server, port):
        # A client that claims https over plain http: nginx's own header wins.
        response = requests.get(
            f"http://127.0.0.1:{port}/echo?x=1",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
            timeout=10,
        )
        assert response.status_code == 200
        seen = json.loads(response.text)
        assert seen["headers"]["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, 127.0.0.1"
        assert seen["headers"]["HTTP_X_FORWARDED_PROTO"] == "http"
        assert seen["scheme"] == "http"  # trusted from the socket's peer, as nginx set it
        assert seen["headers"]["HTTP_X_REQUEST_START"].startswith("t=")
        assert seen["headers"]["HTTP_HOST"] == f"127.0.0.1:{port}"
        assert seen["query"] == "x=1"
        static = requests.get(f"http://127.0.0.1:{port}/static/hello.txt", timeout=10)
        assert static.text == "from nginx\n"
        assert "hello.txt" not in server.log


def _through(port: int) -> Any:
    """What SteadyLoad needs of a server: where to send the requests (nginx's port)."""
    return SimpleNamespace(port=port)


def test_a_hup_under_load_through_nginx_fails_nothing(tmp_path: Path) -> None:
    with behind_nginx(tmp_path) as (server, port):
        with SteadyLoad(_through(port), "/pid") as load:
            poll(lambda: load.ok > 50, 30, "requests through nginx")
            before = set(server.worker_pids())
            served_before = set(load.pids)
            server.signal(signal.SIGHUP)
            poll(lambda: not before & set(server.worker_pids()), 30, "every worker replaced")
            done = load.ok
            poll(lambda: load.ok > done + 50, 30, "requests after the HUP")
        assert load.failed == [], load.failed[:5]
        assert load.pids - served_before  # the new workers served through nginx too


def test_max_requests_recycling_under_load_through_nginx_fails_nothing(tmp_path: Path) -> None:
    with behind_nginx(tmp_path, "--max-requests", "40") as (server, port):
        with SteadyLoad(_through(port), "/pid") as load:
            poll(lambda: load.ok > 400, 60, "400 requests through nginx")
        server.wait_for(r"Autorestarting worker after current request", count=5)
        assert load.failed == [], load.failed[:5]
        assert len(load.pids) >= 10  # at most 40 requests each: 400 took ten workers or more


def test_three_instances_behind_least_conn_one_stopped_under_load(tmp_path: Path) -> None:
    """Scale-out the way more machines work, on one: three servers, each on its own socket
    (`honcho start -c web=3` locally), nginx's least_conn in front. One gets TERM under
    load, as a machine taken out would: nginx sends its requests to the other two."""
    sockets = [str(tmp_path / f"web-{number}.sock") for number in (1, 2, 3)]
    arguments = ["-w", "1", "--keep-alive", "75", "testapps:routes"]
    with (
        running(arguments, bind=f"unix:{sockets[0]}") as first,
        running(arguments, bind=f"unix:{sockets[1]}") as second,
        running(arguments, bind=f"unix:{sockets[2]}") as third,
        nginx_in_front(tmp_path, *sockets) as port,
        SteadyLoad(_through(port), "/pid") as load,
    ):
        instances = {srv: set(srv.worker_pids()) for srv in (first, second, third)}
        poll(lambda: load.ok > 100, 30, "requests through nginx")
        served = set(load.pids)
        assert all({str(pid) for pid in pids} & served for pids in instances.values())
        second.signal(signal.SIGTERM)
        assert second.wait_exit(30) == 0
        done = load.ok
        poll(lambda: load.ok > done + 100, 30, "requests once one instance is gone")
    assert load.failed == [], load.failed[:5]
