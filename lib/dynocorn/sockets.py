"""Listening sockets: bound by the master before any worker is forked.

Sources, in order: sockets inherited from an old master on USR2 re-exec (`DYNOCORN_FDS`),
systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`), then the `bind` addresses.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from dynocorn import addresses
from dynocorn.addresses import Address

INHERITED_FDS = "DYNOCORN_FDS"
SYSTEMD_FIRST_FD = 3
BIND_ATTEMPTS = 5  # gunicorn retries a busy address five times, a second apart
UNIX_PROBE_TIMEOUT = 1.0  # seconds to learn whether a unix socket's server is alive


class BindError(Exception):
    """An address could not be bound; the message says which and why."""


@dataclass
class Listener:
    sock: socket.socket
    address: Address
    # Whether a unix socket's file is ours to remove at the end: not when systemd (or
    # another supervisor, fd://) made the socket and keeps it for the next start.
    owned: bool = True

    @property
    def url(self) -> str:
        if self.address.kind == "tcp":
            return self.address.url(port=self.sock.getsockname()[1])
        if self.address.kind == "fd" and self.sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = self.sock.getsockname()[:2]
            return Address("tcp", host=host, port=port).url()
        return self.address.url()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self, unlink: bool = True) -> None:
        self.sock.close()
        if unlink and self.owned and self.address.kind == "unix":
            try:
                os.unlink(self.address.path)
            except OSError:
                pass


def create_listeners(
    binds: list[str],
    *,
    backlog: int,
    reuse_port: bool,
    environ: MutableMapping[str, str],
    sleep: Callable[[float], None] = time.sleep,
) -> list[Listener]:
    inherited = _take_inherited(environ)
    if inherited:
        return inherited
    activated = _take_systemd(environ)
    if activated:
        return activated
    return [
        _bind(addresses.parse(spec), backlog=backlog, reuse_port=reuse_port, sleep=sleep)
        for spec in binds
    ]


def _listener_from_fd(fd: int, label: Address | None = None) -> Listener:
    sock = socket.socket(fileno=fd)
    if label is None:
        if sock.family == socket.AF_UNIX:
            label = Address("unix", path=str(sock.getsockname()))
        else:
            label = Address("fd", fd=fd)
    return Listener(sock, label, owned=False)


def _take_inherited(environ: MutableMapping[str, str]) -> list[Listener]:
    value = environ.pop(INHERITED_FDS, "")
    listeners = []
    for part in value.split(","):
        if part.strip().isdigit():
            sock = socket.socket(fileno=int(part))
            if sock.family == socket.AF_UNIX:
                label = Address("unix", path=str(sock.getsockname()))
            else:
                host, port = sock.getsockname()[:2]
                label = Address("tcp", host=host, port=port)
            listeners.append(Listener(sock, label))
    return listeners


def _take_systemd(environ: MutableMapping[str, str]) -> list[Listener]:
    """systemd passes sockets as fds 3.. when LISTEN_PID is this process."""
    if environ.get("LISTEN_PID", "") != str(os.getpid()):
        return []
    count = environ.get("LISTEN_FDS", "")
    environ.pop("LISTEN_PID", None)
    environ.pop("LISTEN_FDS", None)
    if not count.isdigit():
        return []
    return [_listener_from_fd(SYSTEMD_FIRST_FD + i) for i in range(int(count))]


def _bind(
    address: Address, *, backlog: int, reuse_port: bool, sleep: Callable[[float], None]
) -> Listener:
    if address.kind == "fd":
        return _listener_from_fd(address.fd, address)
    for attempt in range(BIND_ATTEMPTS):
        try:
            sock = bind_once(address, backlog, reuse_port)
            return Listener(sock, address)
        except OSError as error:
            if error.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                raise BindError(f"Can't connect to {address.url()}: {error.strerror}") from None
            sleep(1.0)
    raise AssertionError("unreachable")


def bind_once(address: Address, backlog: int, reuse_port: bool) -> socket.socket:
    """A listening socket at `address` (tcp or unix), or the OSError: `--bind`'s, and the
    master's own endpoints' (metrics_endpoint.py)."""
    if address.kind == "unix":
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    family, sockaddr = _resolve(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and address.host in ("::", ""):
            # `[::]:PORT` serves IPv4 too: one socket for both, as the platform expects.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _resolve(address: Address) -> tuple[socket.AddressFamily, tuple[str, int]]:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve host ({error})") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def _remove_stale_unix_socket(path: str) -> None:
    """A socket file left by a dead server blocks bind; anything else at the path is kept."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A live server whose backlog is full makes a connect wait (or, with a timeout set, fail
    # with EAGAIN): that is someone too, never a reason to remove its socket.
    probe.settimeout(UNIX_PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except (TimeoutError, BlockingIOError):
        raise OSError(errno.EADDRINUSE, "another server listens there") from None
    except OSError:
        os.unlink(path)  # nobody listens: stale
    else:
        raise OSError(errno.EADDRINUSE, "another server listens there")
    finally:
        probe.close()


def export_for_reexec(listeners: list[Listener], environ: MutableMapping[str, str]) -> None:
    """Let a re-executed master take over the same sockets (USR2)."""
    for listener in listeners:
        listener.sock.set_inheritable(True)
    environ[INHERITED_FDS] = ",".join(str(listener.fileno()) for listener in listeners)
