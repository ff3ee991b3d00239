"""HTTP/1.1 and WSGI behaviour of the real server, over real sockets."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from rawhttp import connect, exchange, got_eof, read_response
from server import Server, running
from worker_classes import WORKER_CLASSES


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    files = tmp_path_factory.mktemp("files")
    payload = files / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB
    env = {"SENDFILE_PATH": str(payload), "CLOSE_MARKER": str(files / "closed.txt")}
    args = [*request.param, "-w", "2", "--timeout", "30", "testapps:routes"]
    with running(args, workers=2, env=env) as srv:
        srv.worker_args = request.param  # type: ignore[attr-defined]
        srv.files = files  # type: ignore[attr-defined]
        yield srv


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def test_hello(server: Server) -> None:
    response = requests.get(url(server, "/"), timeout=5)
    assert response.status_code == 200
    assert response.text == "Hello, World!"
    assert response.headers["Server"] == "dynocorn"
    assert "Date" in response.headers


def test_echo_environ(server: Server) -> None:
    response = requests.post(
        url(server, "/echo?a=1&b=%20"),
        data=b"payload",
        headers={"Content-Type": "text/plain", "X-Custom": "yes", "Host": "example.com:8080"},
        timeout=5,
    )
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo"
    assert seen["query"] == "a=1&b=%20"
    assert seen["raw_uri"] == "/echo?a=1&b=%20"
    assert seen["body"] == "payload"
    assert seen["content_type"] == "text/plain"
    assert seen["content_length"] == "7"
    assert seen["headers"]["HTTP_X_CUSTOM"] == "yes"
    assert (seen["server_name"], seen["server_port"]) == ("example.com", "8080")
    assert seen["remote_addr"] == "127.0.0.1"
    assert seen["scheme"] == "http"
    assert seen["multiprocess"] is True
    # gevent says True as gunicorn's async workers do: requests do run concurrently.
    args = server.worker_args  # type: ignore[attr-defined]
    threaded = "gthread" in args or "gevent" in args
    assert seen["multithread"] is threaded


def test_percent_decoded_path(server: Server) -> None:
    responses, _ = exchange(server.port, b"GET /echo%2Fx/%C3%A9?q HTTP/1.1\r\nHost: h\r\n\r\n")
    seen = json.loads(responses[0].body)
    assert seen["path"] == "/echo/x/\u00c3\u00a9"  # latin-1 decoded, per PEP 3333


def test_trusted_proxy_sets_the_scheme(server: Server) -> None:
    seen = requests.get(
        url(server, "/echo"), headers={"X-Forwarded-Proto": "https"}, timeout=5
    ).json()
    assert seen["scheme"] == "https"  # 127.0.0.1 is trusted by default


def test_keep_alive_serves_many_requests_on_one_connection(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.connect()
    local_port = connection.sock.getsockname()[1]
    for _ in range(20):
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.read() == b"Hello, World!"
        assert response.getheader("Connection") != "close"
    assert connection.sock.getsockname()[1] == local_port  # still the same TCP connection
    connection.close()


def test_http10_closes_unless_keep_alive(server: Server) -> None:
    responses, closed = exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert responses[0].status == 200 and closed
    responses, closed = exchange(server.port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert responses[0].header("Connection") == "keep-alive"
    assert not closed


def test_connection_close_is_honoured(server: Server) -> None:
    responses, closed = exchange(
        server.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert responses[0].header("Connection") == "close"
    assert closed


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    data = b"".join(f"GET /echo?n={n} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for n in range(10))
    responses, _ = exchange(server.port, data, responses=10)
    assert [json.loads(r.body)["query"] for r in responses] == [f"n={n}" for n in range(10)]


def test_chunked_request_body_with_trailers(server: Server) -> None:
    data = (
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    responses, _ = exchange(server.port, data)
    assert json.loads(responses[0].body)["body"] == "hello world"


def test_response_without_length_is_chunked_for_11_and_closed_for_10(server: Server) -> None:
    responses, closed = exchange(server.port, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
    assert responses[0].header("Transfer-Encoding") == "chunked"
    assert responses[0].body == b"".join(f"part {i}\n".encode() for i in range(5))
    assert not closed
    responses, closed = exchange(server.port, b"GET /stream HTTP/1.0\r\n\r\n")
    assert responses[0].header("Transfer-Encoding") is None
    assert responses[0].body.count(b"part") == 5
    assert closed


def test_head_sends_no_body(server: Server) -> None:
    data = b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
    with connect(server.port) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        head = read_response(stream, "HEAD")
        get = read_response(stream)
    assert head is not None and get is not None
    assert head.header("Content-Length") == "13"
    assert get.body == b"Hello, World!"  # the HEAD response carried no body bytes


def test_expect_continue_only_when_the_body_is_read(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /lazy?read=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        stream = sock.makefile("rb")
        interim = read_response(stream)
        assert interim is not None and interim.status == 100
        sock.sendall(b"hello")
        final = read_response(stream)
        assert final is not None and final.body == b"read 5"
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /lazy HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        stream = sock.makefile("rb")
        final = read_response(stream)
        assert final is not None and final.status == 200 and final.body == b"read 0"


def test_big_upload(server: Server) -> None:
    body = bytes(range(256)) * 4096 * 10  # 10 MiB
    response = requests.post(url(server, "/upload"), data=body, timeout=30)
    assert response.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_big_chunked_upload(server: Server) -> None:
    pieces = [bytes([i]) * 100_000 for i in range(100)]
    response = requests.post(url(server, "/upload"), data=iter(pieces), timeout=30)
    assert response.json()["length"] == 10_000_000


def test_big_download(server: Server) -> None:
    response = requests.get(url(server, "/download?mb=10"), timeout=30)
    assert len(response.content) == 10 * 1024 * 1024
    assert response.content[:256] == bytes(range(256))


def test_sendfile(server: Server) -> None:
    payload = (server.files / "payload.bin").read_bytes()  # type: ignore[attr-defined]
    response = requests.get(url(server, "/sendfile"), timeout=30)
    assert response.headers["Content-Length"] == str(len(payload))
    assert response.content == payload


def test_write_callable_and_exc_info(server: Server) -> None:
    assert requests.get(url(server, "/write"), timeout=5).text == "written and returned"
    response = requests.get(url(server, "/exc-info"), timeout=5)
    assert (response.status_code, response.text) == (503, "replaced")


def test_app_exception_gives_500_and_a_traceback(server: Server) -> None:
    response = requests.get(url(server, "/crash"), timeout=5)
    assert response.status_code == 500
    assert "RuntimeError" not in response.text  # no internals to the client
    server.wait_for(r"Error handling request /crash")
    server.wait_for(r"RuntimeError: the app fell over")
    assert requests.get(url(server, "/"), timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/bad-header", "/bad-status"])
def test_invalid_response_headers_give_500(server: Server, path: str) -> None:
    responses, _ = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert responses[0].status == 500
    assert responses[0].header("Set-Cookie") is None
    assert b"should never be sent" not in responses[0].body


def test_close_is_called_when_the_client_disconnects(server: Server) -> None:
    marker = server.files / "closed.txt"  # type: ignore[attr-defined]
    with connect(server.port) as sock:
        sock.sendall(b"GET /closing HTTP/1.1\r\nHost: h\r\n\r\n")
        sock.recv(1000)
    deadline = time.monotonic() + 10
    while not (marker.exists() and "closed" in marker.read_text()):
        assert time.monotonic() < deadline, "close() was not called"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: h\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nHost: evil\r\n\r\n",
            400,
        ),
    ],
    ids=[
        "long-line",
        "many-fields",
        "big-field",
        "cl-te",
        "bare-lf",
        "space-colon",
        "obs-fold",
        "http3",
        "unimplemented-coding",
        "no-host",
        "host-trailer",
    ],
)
def test_refusals_over_a_real_socket(server: Server, data: bytes, status: int) -> None:
    responses, closed = exchange(server.port, data)
    assert responses[0].status == status or (status == 505 and responses[0].status == 400)
    assert closed
    assert requests.get(url(server, "/"), timeout=5).status_code == 200  # worker alive


def test_idle_and_trickling_clients_do_not_block_the_worker(server: Server) -> None:
    idle = [connect(server.port) for _ in range(100)]
    trickling = [connect(server.port) for _ in range(100)]
    try:
        for sock in trickling:
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
        started = time.monotonic()
        for _ in range(10):
            assert requests.get(url(server, "/"), timeout=5).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        for sock in idle + trickling:
            sock.close()


def test_unread_body_does_not_leak_into_the_next_request(server: Server) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\n\r\n"
    data = (
        b"POST /lazy HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
        + smuggled
        + b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    responses, _ = exchange(server.port, data, responses=2)
    assert responses[0].body == b"read 0"  # the app never read its body
    assert json.loads(responses[1].body)["path"] == "/echo"


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_ipv6_loopback(worker_args: list[str]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with running([*worker_args, "testapps:hello"], bind="[::1]:0") as srv:
        assert srv.url.startswith("http://[::1]:")
        response = requests.get(f"http://[::1]:{srv.port}/", timeout=5)
        assert response.text == "Hello, World!"


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_dual_stack_bind_serves_ipv4_too(worker_args: list[str]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with running([*worker_args, "testapps:hello"], bind="[::]:0") as srv:
        assert requests.get(f"http://127.0.0.1:{srv.port}/", timeout=5).status_code == 200
        assert requests.get(f"http://[::1]:{srv.port}/", timeout=5).status_code == 200


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_unix_socket(tmp_path: Path, worker_args: list[str]) -> None:
    path = tmp_path / "dynocorn.sock"
    with running([*worker_args, "testapps:hello"], bind=f"unix:{path}") as srv:
        assert srv.url == f"unix:{path}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            response = read_response(sock.makefile("rb"))
            assert response is not None and response.body == b"Hello, World!"
    assert not path.exists()


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_connections_are_not_left_open_forever(worker_args: list[str]) -> None:
    args = [*worker_args, "--keep-alive", "1", "testapps:hello"]
    with running(args) as srv, connect(srv.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        stream = sock.makefile("rb")
        assert read_response(stream) is not None
        assert got_eof(sock, stream, wait=5.0)  # closed after about 1 s idle


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_a_kept_alive_connection_is_served_while_new_connections_keep_coming(
    worker_args: list[str],
) -> None:
    """One worker, requests of a few milliseconds (the sync worker then serves the oldest
    first, one at a time), and clients that open a new connection for each request, so the
    listening socket is never empty: the kept-alive connection's requests are still served
    in turn. Before, the listener always went first: the kept-alive connection's next
    request sat unread until its idle timeout, and was reset."""
    args = [*worker_args, "-w", "1", "--keep-alive", "2", "testapps:sleepy"]
    stop = threading.Event()

    def connect_for_each_request(port: int) -> None:
        while not stop.is_set():
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            client.request("GET", "/?seconds=0.002", headers={"Connection": "close"})
            client.getresponse().read()
            client.close()

    with running(args) as srv, connect(srv.port, timeout=30) as sock:
        clients = [
            threading.Thread(target=connect_for_each_request, args=(srv.port,), daemon=True)
            for _ in range(8)
        ]
        for client in clients:
            client.start()
        stream = sock.makefile("rb")
        try:
            for _ in range(30):
                sock.sendall(b"GET /?seconds=0.002 HTTP/1.1\r\nHost: h\r\n\r\n")
                response = read_response(stream)
                assert response is not None and response.status == 200
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=30)


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_requests_that_came_in_during_a_long_one_are_not_reset_by_the_idle_timeout(
    worker_args: list[str],
) -> None:
    """Two kept-alive connections send their next request while a third's request holds
    the only worker for longer than the keep-alive timeout. The worker then serves one
    (requests are long: one per look) and its heartbeat finds the other idle past its
    timeout: it must not close it with the request unread (a reset), but serve it."""
    args = [*worker_args, "-w", "1", "--keep-alive", "1", "testapps:routes"]
    fast = b"GET /announced-sleep?seconds=0.002 HTTP/1.1\r\nHost: h\r\n\r\n"
    with (
        running(args) as srv,
        connect(srv.port, timeout=30) as first,
        connect(srv.port, timeout=30) as second,
        connect(srv.port, timeout=30) as holder,
    ):
        streams = [sock.makefile("rb") for sock in (first, second, holder)]
        for sock, stream in [(first, streams[0])] * 16 + [(second, streams[1])]:
            sock.sendall(fast)  # a median of milliseconds: long requests
            assert (response := read_response(stream)) is not None and response.status == 200
        holder.sendall(b"GET /announced-sleep?seconds=2.5 HTTP/1.1\r\nHost: h\r\n\r\n")
        srv.wait_for(r"testapps: /announced-sleep\?seconds=2.5 started")
        first.sendall(fast)
        second.sendall(fast)
        for stream in streams:
            assert (response := read_response(stream)) is not None and response.status == 200
