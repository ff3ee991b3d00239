"""Bind addresses as gunicorn users write them (addresses.py)."""

from __future__ import annotations

import pytest

from dynocorn.addresses import DEFAULT_PORT, Address, parse


@pytest.mark.parametrize(
    ("text", "address", "url"),
    [
        ("127.0.0.1:5000", Address("tcp", host="127.0.0.1", port=5000), "http://127.0.0.1:5000"),
        ("localhost", Address("tcp", host="localhost", port=DEFAULT_PORT), None),
        (":5000", Address("tcp", host="0.0.0.0", port=5000), "http://0.0.0.0:5000"),
        ("[::1]:5000", Address("tcp", host="::1", port=5000), "http://[::1]:5000"),
        ("[::]", Address("tcp", host="::", port=DEFAULT_PORT), None),
        ("tcp://127.0.0.1:1", Address("tcp", host="127.0.0.1", port=1), None),
        ("http://127.0.0.1:2", Address("tcp", host="127.0.0.1", port=2), None),
        (" 127.0.0.1:0 ", Address("tcp", host="127.0.0.1", port=0), "http://127.0.0.1:0"),
        ("unix:/run/app.sock", Address("unix", path="/run/app.sock"), "unix:/run/app.sock"),
        ("unix:///run/app.sock", Address("unix", path="/run/app.sock"), None),
        ("fd://3", Address("fd", fd=3), "fd://3"),
    ],
)
def test_what_gunicorn_accepts(text: str, address: Address, url: str | None) -> None:
    assert parse(text) == address
    if url is not None:
        assert address.url() == url


def test_the_url_names_the_real_port_of_port_0() -> None:
    assert parse("[::1]:0").url(port=43210) == "http://[::1]:43210"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unix:", "'unix:' has no socket path"),
        ("fd://x", "'fd://x' is not fd://N"),
        ("127.0.0.1:http", "'127.0.0.1:http' has no valid port (0-65535)"),
        ("127.0.0.1:65536", "'127.0.0.1:65536' has no valid port (0-65535)"),
        ("::1:8000", "'::1:8000': write IPv6 addresses in brackets, e.g. [::1]:8000"),
        ("[::1", "'[::1': not [IPV6]:PORT"),
        ("a b:80", "'a b:80' has an invalid host"),
        ("host/path:80", "'host/path:80' has an invalid host"),
    ],
)
def test_a_bad_address_says_which_and_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse(text)
    assert str(error.value) == message
