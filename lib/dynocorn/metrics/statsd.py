"""A StatsD client over UDP or a unix datagram socket, with gunicorn's metric names.

Metrics are best effort: the socket never blocks and no method raises, so a StatsD server
that is down, slow or misnamed costs a request nothing. What was lost is counted in
``dropped``; why the client could not start is in ``error``, and ``error_to_log()`` hands it
to the caller once: the master logs it, and a worker only if its own client failed otherwise.
"""

from __future__ import annotations

import math
import re
import socket

from dynocorn.addresses import split_host_port

DEFAULT_PORT = 8125

# gunicorn's names, kept so dashboards built for gunicorn keep working.
REQUESTS = "gunicorn.requests"  # counter
REQUEST_DURATION = "gunicorn.request.duration"  # timer, milliseconds
REQUEST_STATUS = "gunicorn.request.status.{}"  # counter per status code
WORKERS = "gunicorn.workers"  # gauge
LOG = "gunicorn.log.{}"  # counter per level: critical, error, warning, exception

# Errors already handed out for logging, in this process or (inherited across fork) in the
# master: every worker makes its own client, and eight copies of one warning tell nothing.
_LOGGED_ERRORS: set[str] = set()

# gunicorn 20 started to read "unix:PATH" as a socket path, and kept "unix:8125" meaning a
# host named "unix" so old configurations did not change meaning.
_UNIX_HOST_PORT = re.compile(r"unix:(\d+)")


def parse_statsd_host(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]`` or ``[IPV6][:PORT]`` -> (host, port); ``unix:PATH`` or ``unix://PATH``
    -> (path, None), a unix datagram socket, as gunicorn accepts. The port defaults to 8125.

    Raises ValueError saying what is wrong (the configuration's error line names the
    setting and the value).
    """
    spec = text.strip()
    if spec.startswith("unix:") and not _UNIX_HOST_PORT.fullmatch(spec):
        path = spec.removeprefix("unix:").removeprefix("//")
        if not path:
            raise ValueError("no socket path after unix:")
        return path, None
    spec = spec.removeprefix("udp://").removeprefix("tcp://")  # gunicorn ignores tcp:// too
    if "://" in spec:
        raise ValueError("expected HOST:PORT or unix://PATH")
    host, port_text = split_host_port(spec, example="[::1]:8125")
    if not host or any(char.isspace() or char in "/?#@[]" for char in host):
        raise ValueError("no valid host: expected HOST:PORT")
    if not port_text:
        return host, DEFAULT_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError("no valid port (1-65535)")
    return host, int(port_text)


class StatsD:
    """Sends ``prefix + name:value|type`` datagrams, with DogStatsD tags (``|#k:v,...``).

    ``port=None`` makes ``host`` the path of a unix datagram socket. The host name is
    resolved once, here: a DNS lookup on every request could block it. One instance may be
    shared across fork and threads: each datagram is sent whole by one system call.
    """

    def __init__(self, host: str, port: int | None, prefix: str = "", tags: str = "") -> None:
        # gunicorn's statsd_prefix semantics: "app" and "app." both give "app.requests".
        stem = prefix.rstrip(".")
        self.prefix = f"{stem}." if stem else ""
        tag_list = [tag.strip() for tag in tags.split(",") if tag.strip()]
        self._suffix = "|#" + ",".join(tag_list) if tag_list else ""
        self.dropped = 0
        self.error: str | None = None
        self._sock: socket.socket | None = None
        where = host if port is None else f"{host}:{port}"
        try:
            self._sock = _connect(host, port)
        except OSError as error:
            self.error = f"StatsD at {where} unavailable, metrics off: {error}"

    def error_to_log(self) -> str | None:
        """``error``, unless this process or its master has logged the same one already."""
        if self.error is None or self.error in _LOGGED_ERRORS:
            return None
        _LOGGED_ERRORS.add(self.error)
        return self.error

    def increment(self, name: str, value: float = 1) -> None:
        self._send(name, value, "c")

    def timing(self, name: str, ms: float) -> None:
        self._send(name, ms, "ms")

    def gauge(self, name: str, value: float) -> None:
        """An absolute value. StatsD reads a signed gauge ("-3") as a change: send sizes."""
        self._send(name, value, "g")

    def request(self, status: int, duration_ms: float) -> None:
        """What gunicorn sends after each request: duration, count, count by status."""
        self.timing(REQUEST_DURATION, duration_ms)
        self.increment(REQUESTS)
        self.increment(REQUEST_STATUS.format(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> StatsD:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, name: str, value: float, kind: str) -> None:
        sock = self._sock
        if sock is None:
            return
        number = _number(value)
        if number is None:
            self.dropped += 1
            return
        packet = f"{self.prefix}{name}:{number}|{kind}{self._suffix}"
        try:
            sock.send(packet.encode("utf-8", "replace"))
        except OSError:
            # ECONNREFUSED (the ICMP of an earlier datagram to a closed port), EAGAIN (buffer
            # full), ENOENT (unix socket removed): the metric is lost, the request is not.
            self.dropped += 1


def _connect(host: str, port: int | None) -> socket.socket:
    if port is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address: str | tuple[object, ...] = host
    else:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
    try:
        # Non-blocking: a full unix socket buffer (a stalled agent) would otherwise block.
        sock.setblocking(False)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _number(value: float) -> str | None:
    """``12``, ``12.5``, ``0.125``: at most three decimals; None for NaN and infinities."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return None
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
