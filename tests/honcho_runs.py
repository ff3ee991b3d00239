"""Running `honcho start` (directly or through `make run`) and reading what it reports.

honcho prefixes every line with the time and the process name (`web.1  | ...`,
`system | web.1 stopped (rc=0)`) on its stdout, which `Server` reads into `stdout_lines`.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import sys
import time
from pathlib import Path

import requests

from server import Server

VENV_BIN = Path(sys.executable).parent  # the venv running the tests, where honcho is
HONCHO = str(VENV_BIN / "honcho")
STARTED = re.compile(r"\| (\S+) started \(pid=(\d+)\)")
STOPPED = re.compile(r"\| (\S+) stopped \(rc=(-?\d+)\)")


def honcho_output(server: Server) -> str:
    return "\n".join(server.stdout_lines)


def exit_statuses(server: Server) -> dict[str, int]:
    """Each process's exit status as honcho reports it (`web.1 stopped (rc=0)`)."""
    return {name: int(rc) for name, rc in STOPPED.findall(honcho_output(server))}


def kill_unstopped_children(server: Server) -> None:
    """SIGKILL the process groups of honcho's children that honcho did not see stop.

    honcho starts each Procfile process in a session of its own, outside the group the test
    created: if honcho itself fails, its children would outlive the test. Only the groups it
    reported starting and not stopping are signalled (a stopped one's pid may be reused).
    """
    output = honcho_output(server)
    started = {name: int(pid) for name, pid in STARTED.findall(output)}
    stopped = {name for name, _ in STOPPED.findall(output)}
    for name, pid in started.items():
        if name not in stopped:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def answers(port: int, host: str = "127.0.0.1") -> requests.Response:
    """The first response from http://host:port/, retrying while nothing listens (30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return requests.get(f"http://{host}:{port}/", timeout=2)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def port_is_free(port: int) -> bool:
    """Whether dynocorn could bind [::]:port (IPv4 too) right now."""
    try:
        with socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True):
            return True
    except OSError:
        return False


def below_ephemeral_ports() -> int:
    """The first port of the range the kernel hands out for port 0 and client connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(count: int = 1) -> int:
    """A port free on [::] (and so on 0.0.0.0) now, with the `count - 1` after it.

    Chosen at random below the kernel's ephemeral range: such a port is passed to a server
    through PORT or a command line, so it stays unbound for a while, and the suite runs in
    parallel processes. An ephemeral port could meanwhile be taken by another test's client
    connection or port-0 server; below that range only another pick like this one could.
    """
    chooser = random.SystemRandom()
    for _ in range(100):
        base = chooser.randrange(10000, below_ephemeral_ports() - count)
        if all(port_is_free(base + offset) for offset in range(count)):
            return base
    raise AssertionError(f"no {count} free port(s) in a row")


def free_port_pair() -> int:
    """A base port whose next one is free too (honcho gives web.2 base + 1)."""
    return free_port(count=2)
