"""Listening sockets (sockets.py), bound for real on loopback and in a temporary directory.
The retry on a busy address is told to sleep through an injected function, so nothing here
waits."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dynocorn import sockets
from dynocorn.sockets import BIND_ATTEMPTS, INHERITED_FDS, BindError, create_listeners


def listen(
    binds: list[str],
    environ: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[sockets.Listener]:
    return create_listeners(
        binds, backlog=16, reuse_port=False, environ={} if environ is None else environ, sleep=sleep
    )


@pytest.fixture
def busy_port() -> Iterator[socket.socket]:
    """A port someone else listens on."""
    blocker = socket.create_server(("127.0.0.1", 0))
    yield blocker
    blocker.close()


def test_port_0_is_named_by_the_port_the_kernel_chose() -> None:
    (listener,) = listen(["127.0.0.1:0"])
    try:
        port = listener.sock.getsockname()[1]
        assert port > 0 and listener.url == f"http://127.0.0.1:{port}"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        listener.close()


def test_a_busy_address_is_tried_again_then_named_in_one_line(busy_port: socket.socket) -> None:
    port = busy_port.getsockname()[1]
    slept: list[float] = []
    with pytest.raises(BindError) as error:
        listen([f"127.0.0.1:{port}"], sleep=slept.append)
    assert slept == [1.0] * (BIND_ATTEMPTS - 1)  # gunicorn's five tries, a second apart
    assert str(error.value) == f"Can't connect to http://127.0.0.1:{port}: Address already in use"


def test_an_address_freed_meanwhile_is_bound_at_the_next_try(busy_port: socket.socket) -> None:
    port = busy_port.getsockname()[1]
    (listener,) = listen([f"127.0.0.1:{port}"], sleep=lambda _: busy_port.close())
    assert listener.sock.getsockname()[1] == port
    listener.close()


def test_a_stale_unix_socket_is_replaced_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed server leaves
    (listener,) = listen([f"unix:{path}"])
    assert listener.url == f"unix:{path}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
    listener.close()
    assert not path.exists()


def test_a_live_unix_socket_or_another_file_is_left_alone(tmp_path: Path) -> None:
    live = tmp_path / "live.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(live))
    server.listen(1)  # it never accepts: a full backlog must not make the probe wait forever
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    try:
        with pytest.raises(BindError, match="another server listens there"):
            listen([f"unix:{live}"], sleep=lambda _: None)
        with pytest.raises(BindError, match="exists and is not a socket"):
            listen([f"unix:{other}"], sleep=lambda _: None)
        assert other.read_text() == "mine"
    finally:
        server.close()


def test_a_new_master_takes_over_the_old_ones_sockets() -> None:
    (old,) = listen(["127.0.0.1:0"])
    port = old.sock.getsockname()[1]
    environ: dict[str, str] = {}
    sockets.export_for_reexec([old], environ)
    assert environ == {INHERITED_FDS: str(old.fileno())}
    assert old.sock.get_inheritable()
    (new,) = listen(["127.0.0.1:9"], environ)  # the binds are not bound again
    assert environ == {}  # taken: a worker must not take them too
    assert (new.fileno(), new.url) == (old.fileno(), f"http://127.0.0.1:{port}")
    old.sock.detach()  # one descriptor, two objects: only one may close it
    new.close()


def test_systemd_sockets_are_only_for_the_process_they_were_passed_to() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    (listener,) = listen(["127.0.0.1:0"], environ)
    assert listener.address.kind == "tcp"  # bound itself: LISTEN_PID is someone else's
    listener.close()


def test_the_any_address_of_ipv6_serves_ipv4_too() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        (listener,) = listen(["[::]:0"])
    except BindError as error:
        pytest.skip(f"IPv6 cannot be bound here: {error}")
    try:
        assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = listener.sock.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        listener.close()
