"""Small WSGI apps the integration tests serve, one behaviour each."""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _read_all(stream: Any) -> bytes:
    """read() with a size, as wsgiref.validate insists on."""
    pieces = []
    while piece := stream.read(65536):
        pieces.append(piece)
    return b"".join(pieces)


def _record(line: dict[str, Any]) -> None:
    """The echo app's memory of what it ran, for tests that must prove a request never ran."""
    path = os.environ.get("ECHO_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with what it saw, as JSON."""
    body = _read_all(environ["wsgi.input"])
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "script_name": environ["SCRIPT_NAME"],
        "query": environ["QUERY_STRING"],
        "raw_uri": environ["RAW_URI"],
        "protocol": environ["SERVER_PROTOCOL"],
        "scheme": environ["wsgi.url_scheme"],
        "server_name": environ["SERVER_NAME"],
        "server_port": environ["SERVER_PORT"],
        "remote_addr": environ.get("REMOTE_ADDR"),
        "content_type": environ.get("CONTENT_TYPE"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "body": body.decode("latin-1"),
        "multiprocess": environ["wsgi.multiprocess"],
        "multithread": environ["wsgi.multithread"],
        "run_once": environ["wsgi.run_once"],
        "pid": os.getpid(),
    }
    _record(seen)
    data = json.dumps(seen).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


validated_echo = validator(echo)


def crash(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    raise RuntimeError("the app fell over")


def sleepy(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Sleeps ?seconds (default 1), then answers with its pid."""
    query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if "=" in part)
    time.sleep(float(query.get("seconds", "1")))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def announce(line: str) -> None:
    """One write, so that lines from requests running at once do not interleave."""
    os.write(2, f"{line}\n".encode())


def announced_sleep(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """As sleepy, after a log line a test can wait for instead of sleeping itself."""
    announce(f"testapps: {environ['RAW_URI']} started in {os.getpid()}")
    return sleepy(environ, start_response)


def announced_spin(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Computes for ?seconds (default 1) without yielding, after a log line: holds the
    worker (and gevent's hub) the way CPU work does. Answers with its pid."""
    announce(f"testapps: {environ['RAW_URI']} started in {os.getpid()}")
    query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if "=" in part)
    end = time.monotonic() + float(query.get("seconds", "1"))
    while time.monotonic() < end:
        pass
    return pid(environ, start_response)


def until_file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Announces itself, then answers with its pid once the file ?path exists (at most 60 s):
    a request that runs exactly as long as the test wants."""
    path = environ["QUERY_STRING"].partition("path=")[2]
    announce(f"testapps: {environ['RAW_URI']} started in {os.getpid()}")
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def orphan(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Leaves a process behind with no parent: a shell starts `sleep ?seconds` in the
    background and exits, so the sleep is handed to the init of its PID namespace (in a
    container: the server). Answers with the sleep's pid, as that namespace numbers it."""
    query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if "=" in part)
    seconds = float(query.get("seconds", "1"))
    shell = subprocess.run(
        ["/bin/sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    body = shell.stdout.strip().encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def gc_freeze_count(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """How many objects gc.freeze() moved to the permanent generation in this process."""
    body = str(gc.get_freeze_count()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hang(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/hang":
        time.sleep(3600)
    return hello(environ, start_response)


def stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """No Content-Length: chunked for HTTP/1.1, close-delimited for HTTP/1.0."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (f"part {i}\n".encode() for i in range(5))


class Closing:
    """An iterable whose close() leaves a mark, to prove close() is always called."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 65536

    def close(self) -> None:
        with open(self.marker, "a", encoding="utf-8") as handle:
            handle.write("closed\n")


def closing(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Closing(os.environ["CLOSE_MARKER"])


def download(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """?mb of deterministic bytes, in 64 KiB pieces, with a length."""
    query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if "=" in part)
    size = int(query.get("mb", "10")) * 1024 * 1024
    block = bytes(range(256)) * 256
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    return (block for _ in range(size // len(block)))


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Reads the body in pieces; answers its length and sha256."""
    digest = hashlib.sha256()
    length = 0
    stream = environ["wsgi.input"]
    while True:
        piece = stream.read(100_000)
        if not piece:
            break
        digest.update(piece)
        length += len(piece)
    data = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def lazy_reader(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Reads the body only when asked (?read=1): for 100-continue."""
    body = _read_all(environ["wsgi.input"]) if "read=1" in environ["QUERY_STRING"] else b""
    data = f"read {len(body)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def sendfile(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = os.environ["SENDFILE_PATH"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    wrapper: Callable[..., Iterable[bytes]] = environ["wsgi.file_wrapper"]
    return wrapper(open(path, "rb"), 65536)  # the server closes it


def bad_header(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")])
    return [b"should never be sent"]


def bad_status(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200\r\nX: y", [])
    return [b"should never be sent"]


def exc_info_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Starts a response, then replaces it with an error through exc_info, as frameworks do."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("late failure")
    except ValueError:
        import sys

        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def write_callable(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and returned"]


def pid(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The worker's process id: which worker answered."""
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def status(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """/status/404 answers 404: a known status, for the request counts."""
    code = int(environ["PATH_INFO"].split("/")[2])
    body = b"status"
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    start_response(f"{code} Status", headers)
    return [body]


def routes(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """One app for most integration tests, by path."""
    # Every route runs under wsgiref's validator, except those that are invalid on purpose
    # and sendfile (the validator's wrapper would hide the file from the server).
    table: dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]] = {
        "/echo": validated_echo,
        "/crash": validator(crash),
        "/sleep": validator(sleepy),
        "/announced-sleep": validator(announced_sleep),
        "/gc-freeze-count": validator(gc_freeze_count),
        "/until-file": validator(until_file),
        "/hang": validator(hang),
        "/stream": validator(stream),
        "/download": validator(download),
        "/upload": validator(upload),
        "/lazy": validator(lazy_reader),
        "/bad-header": bad_header,
        "/bad-status": bad_status,
        "/exc-info": validator(exc_info_app),
        "/write": validator(write_callable),
        "/closing": validator(closing),
        "/sendfile": sendfile,
        "/pid": validator(pid),
        "/announced-spin": validator(announced_spin),
        "/orphan": validator(orphan),
        "/status": validator(status),
    }
    first_segment = "/" + environ["PATH_INFO"].split("/")[1]
    handler = table.get(first_segment, validator(hello))
    return handler(environ, start_response)


not_callable = 3


def environment(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The process's environment variable ?name, its uid, and whether `extra_module` imports."""
    name = environ["QUERY_STRING"].partition("name=")[2]
    data = json.dumps(
        {
            "value": os.environ.get(name),
            "uid": os.getuid(),
            "umask": _umask(),
            "extra_module": importlib.util.find_spec("extra_module") is not None,
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
