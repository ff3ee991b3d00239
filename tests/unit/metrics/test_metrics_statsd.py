import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from dynocorn.metrics.statsd import StatsD, parse_statsd_host

# --- parse_statsd_host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("localhost:8125", ("localhost", 8125)),
        ("localhost", ("localhost", 8125)),
        (" statsd.internal:9125 ", ("statsd.internal", 9125)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:9125", ("::1", 9125)),
        ("[::1]", ("::1", 8125)),
        ("tcp://metrics:8125", ("metrics", 8125)),  # gunicorn strips tcp:// too
        ("udp://metrics:8126", ("metrics", 8126)),
        ("unix:/run/statsd.sock", ("/run/statsd.sock", None)),
        ("unix:///run/statsd.sock", ("/run/statsd.sock", None)),
        ("unix:relative.sock", ("relative.sock", None)),
        ("unix:8125", ("unix", 8125)),  # gunicorn: a host named "unix", kept since 20.0
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_statsd_host(text: str, address: tuple[str, int | None]) -> None:
    assert parse_statsd_host(text) == address


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no valid host"),
        (":8125", "no valid host"),
        ("localhost:abc", "no valid port"),
        ("localhost:0", "no valid port"),
        ("localhost:65536", "no valid port"),
        ("localhost:-1", "no valid port"),
        ("localhost:٣", "no valid port"),  # a digit to str.isdigit, not to a port
        ("::1:8125", "brackets"),
        ("[::1", "^not \\[IPV6\\]:PORT"),
        ("[::1]8125", "^not \\[IPV6\\]:PORT"),
        ("unix:", "no socket path"),
        ("unix://", "no socket path"),
        ("stats d:8125", "no valid host"),
        ("http://x:1", "expected HOST:PORT or unix://PATH"),
        ("x/y:1", "no valid host"),
    ],
)
def test_bad_statsd_hosts(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_statsd_host(text)


# --- a real UDP server ----------------------------------------------------------------------


def receive(server: socket.socket, count: int) -> list[str]:
    return [server.recv(65536).decode() for _ in range(count)]


def nothing_waiting(server: socket.socket) -> bool:
    server.settimeout(0.05)
    try:
        server.recv(65536)
    except TimeoutError:
        return True
    return False


def test_gunicorn_names_under_the_prefix_with_tags(statsd_server: socket.socket) -> None:
    port = statsd_server.getsockname()[1]
    with StatsD("127.0.0.1", port, prefix="myapp", tags="env:prod, dyno:web.1") as statsd:
        assert statsd.error is None
        statsd.request(200, 12.3456)
        statsd.gauge("gunicorn.workers", 3)
        statsd.increment("gunicorn.log.error")
        statsd.increment("dynocorn.custom", 5)
        assert receive(statsd_server, 6) == [
            "myapp.gunicorn.request.duration:12.346|ms|#env:prod,dyno:web.1",
            "myapp.gunicorn.requests:1|c|#env:prod,dyno:web.1",
            "myapp.gunicorn.request.status.200:1|c|#env:prod,dyno:web.1",
            "myapp.gunicorn.workers:3|g|#env:prod,dyno:web.1",
            "myapp.gunicorn.log.error:1|c|#env:prod,dyno:web.1",
            "myapp.dynocorn.custom:5|c|#env:prod,dyno:web.1",
        ]
        assert statsd.dropped == 0


@pytest.mark.parametrize(
    ("prefix", "name"),
    [
        ("", "gunicorn.requests"),
        ("app", "app.gunicorn.requests"),
        ("app.", "app.gunicorn.requests"),
        ("app...", "app.gunicorn.requests"),
        ("service.app", "service.app.gunicorn.requests"),
        ("a", "a.gunicorn.requests"),  # gunicorn's regex forgets the dot for one letter
        (".", "gunicorn.requests"),
    ],
)
def test_prefix_joins_with_one_dot(statsd_server: socket.socket, prefix: str, name: str) -> None:
    with StatsD("127.0.0.1", statsd_server.getsockname()[1], prefix=prefix) as statsd:
        statsd.increment("gunicorn.requests")
        assert receive(statsd_server, 1) == [f"{name}:1|c"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(5, "5"), (1.0, "1"), (12.5, "12.5"), (0.1234, "0.123"), (0.0001, "0"), (-0.0001, "0")],
)
def test_numbers(statsd_server: socket.socket, value: float, text: str) -> None:
    with StatsD("127.0.0.1", statsd_server.getsockname()[1]) as statsd:
        statsd.timing("t", value)
        assert receive(statsd_server, 1) == [f"t:{text}|ms"]


def test_nan_is_dropped_not_sent(statsd_server: socket.socket) -> None:
    with StatsD("127.0.0.1", statsd_server.getsockname()[1]) as statsd:
        statsd.gauge("g", float("nan"))
        statsd.timing("t", float("inf"))
        assert statsd.dropped == 2
        assert nothing_waiting(statsd_server)


def test_ipv6(tmp_path: Path) -> None:
    try:
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        pytest.skip("no IPv6")
    with server:
        try:
            server.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1")
        server.settimeout(2)
        host, port = parse_statsd_host(f"[::1]:{server.getsockname()[1]}")
        assert port is not None
        with StatsD(host, port) as statsd:
            statsd.increment("gunicorn.requests")
            assert receive(server, 1) == ["gunicorn.requests:1|c"]


# --- failures cost nothing ------------------------------------------------------------------


def test_a_dead_server_never_raises() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with StatsD("127.0.0.1", port) as statsd:
        assert statsd.error is None  # UDP cannot know yet
        for _ in range(10):
            statsd.request(500, 1.0)
        # Loopback answers with ICMP at once: later sends report ECONNREFUSED, counted.
        assert statsd.dropped > 0


def test_an_unknown_host_never_raises() -> None:
    statsd = StatsD("no-such-host.invalid", 8125, prefix="app")
    assert statsd.error is not None
    assert "no-such-host.invalid:8125" in statsd.error
    statsd.request(200, 1.0)
    statsd.gauge("gunicorn.workers", 2)
    statsd.close()


def test_after_close_nothing_is_sent(statsd_server: socket.socket) -> None:
    statsd = StatsD("127.0.0.1", statsd_server.getsockname()[1])
    statsd.close()
    statsd.close()
    statsd.increment("x")
    assert nothing_waiting(statsd_server)


# --- unix datagram sockets ------------------------------------------------------------------


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "statsd.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield sock, path


def test_unix_socket(unix_server: tuple[socket.socket, str]) -> None:
    server, path = unix_server
    host, port = parse_statsd_host(f"unix://{path}")
    with StatsD(host, port, prefix="app", tags="a:b") as statsd:
        assert statsd.error is None
        statsd.gauge("gunicorn.workers", 4)
        assert receive(server, 1) == ["app.gunicorn.workers:4|g|#a:b"]


def test_a_missing_unix_socket_never_raises(tmp_path: Path) -> None:
    statsd = StatsD(str(tmp_path / "nobody.sock"), None)
    assert statsd.error is not None
    statsd.increment("gunicorn.requests")
    statsd.close()


def test_a_stalled_agent_never_blocks(unix_server: tuple[socket.socket, str]) -> None:
    # Nobody reads: a unix datagram queue fills after a few packets, and a blocking send
    # would then wait forever. The alarm turns such a hang into a failure.
    _, path = unix_server

    def hung(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("StatsD blocked on a full socket")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with StatsD(path, None) as statsd:
            for _ in range(5_000):
                statsd.increment("gunicorn.requests")
            assert statsd.dropped > 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
