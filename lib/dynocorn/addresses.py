"""Bind addresses as gunicorn writes them: `HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd://N`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Address:
    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    @property
    def is_ipv6(self) -> bool:
        return self.kind == "tcp" and ":" in self.host

    def url(self, port: int | None = None) -> str:
        """How the log names it; `port` is the real one when bound to port 0."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"http://{host}:{self.port if port is None else port}"


def parse(text: str) -> Address:
    """Parse one bind address; ValueError names what is wrong."""
    spec = text.strip()
    if spec.startswith("unix:"):
        path = spec.removeprefix("unix:").removeprefix("//")
        if not path:
            raise ValueError(f"{text!r} has no socket path")
        return Address("unix", path=path)
    if spec.startswith("fd://"):
        number = spec.removeprefix("fd://")
        if not number.isdigit():
            raise ValueError(f"{text!r} is not fd://N")
        return Address("fd", fd=int(number))
    spec = spec.removeprefix("tcp://").removeprefix("http://")
    try:
        host, port_text = split_host_port(spec, example="[::1]:8000")
    except ValueError as error:
        raise ValueError(f"{text!r}: {error}") from None
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"{text!r} has no valid port (0-65535)")
        port = int(port_text)
    if any(char.isspace() or char in "/?#@" for char in host):
        raise ValueError(f"{text!r} has an invalid host")
    return Address("tcp", host=host or "0.0.0.0", port=port)


def split_host_port(spec: str, example: str) -> tuple[str, str]:
    """``HOST[:PORT]`` or ``[IPV6][:PORT]`` -> (host, port text, empty when absent).

    ValueError says what is wrong, not with what (the caller knows); `example` shows
    brackets.
    """
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("not [IPV6]:PORT")
        return host, rest[1:]
    if spec.count(":") > 1:
        raise ValueError(f"write IPv6 addresses in brackets, e.g. {example}")
    host, _, port_text = spec.partition(":")
    return host, port_text
