"""Value parsers for settings.

Each takes what a user wrote (a string from the command line or a `*_CMD_ARGS` variable, or any
Python value from a config file) and returns the typed value, or raises ValueError with a short
reason. The caller adds the setting name, the value and its source to the message.
"""

from __future__ import annotations

import grp
import importlib.util
import ipaddress
import json
import pwd
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dynocorn import addresses, units
from dynocorn.metrics.statsd import parse_statsd_host

Parser = Callable[[Any], Any]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("not a boolean (true or false)")


def as_int(value: Any) -> int:
    # bool is an int subclass; `workers = True` is a mistake, not 1.
    if isinstance(value, bool):
        raise ValueError("not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    raise ValueError("not a whole number")


def non_negative_int(value: Any) -> int:
    number = as_int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def positive_int(value: Any) -> int:
    number = as_int(value)
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


def bounded_int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        number = as_int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def non_negative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("not a number") from None
    if number < 0 or number != number:
        raise ValueError("must be 0 or more")
    return number


def positive_float(value: Any) -> float:
    number = non_negative_float(value)
    if number == 0 or number == float("inf"):
        raise ValueError("must be more than 0")
    return number


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def optional_str(value: Any) -> str | None:
    if value is None:
        return None
    return as_str(value)


def choice(*allowed: str) -> Parser:
    def parse(value: Any) -> str:
        text = as_str(value).strip().lower()
        if text not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return text

    return parse


def optional_choice(*allowed: str) -> Parser:
    """One of `allowed`, or None: unset, so that the server chooses."""
    pick = choice(*allowed)

    def parse(value: Any) -> str | None:
        return None if value is None else pick(value)

    return parse


def root_path(value: Any) -> str:
    """A URL path prefix (`/api`), or empty; a trailing slash is dropped, since the app's
    paths begin with one."""
    text = as_str(value).strip()
    if text and not text.startswith("/"):
        raise ValueError("must be empty or a path beginning with / (like /api)")
    return text.rstrip("/")


def as_str_list(value: Any) -> list[str]:
    """A list of strings; a single string from a config file counts as a one-item list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("not a string or a list of strings")


def comma_list(value: Any) -> list[str]:
    """`a,b, c` or a list: gunicorn accepts both for lists like forwarded_allow_ips."""
    items = [value] if isinstance(value, str) else as_str_list(value)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def bind_list(value: Any) -> list[str]:
    binds = as_str_list(value)
    if not binds:
        raise ValueError("at least one address is needed")
    for bind in binds:
        addresses.parse(bind)
    return binds


def ip_allow_list(value: Any) -> list[str]:
    entries = comma_list(value)
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address, a CIDR network or *") from None
    return entries


def key_value_list(value: Any) -> list[str]:
    pairs = as_str_list(value)
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            raise ValueError(f"{pair!r} is not KEY=VALUE")
    return pairs


def str_dict(value: Any) -> dict[str, str]:
    mapping = _dict(value, " of strings")
    if all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        return mapping
    raise ValueError("not a dict of strings")


def any_dict(value: Any) -> dict[str, Any]:
    return _dict(value, "")


def _dict(value: Any, of: str) -> dict[Any, Any]:
    """A dict, or its JSON text (from the command line or the environment)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"not a JSON object{of}") from None
    if isinstance(value, dict):
        return dict(value)
    raise ValueError(f"not a dict{of}")


def size_bytes(value: Any) -> int | None:
    """A memory size (`512MB`, `1G`, or a number of MB); None and 0 mean no limit."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = as_str(value).strip()
    if text in {"", "0"}:
        return None
    return units.parse_size(text)


def size_mb(value: Any) -> int:
    """A size given in MB by default (`256`, `256MB`, `1G`), returned as whole MB."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    nbytes = units.parse_size(as_str(value).strip())
    megabytes = nbytes // 2**20
    if megabytes < 1:
        raise ValueError("must be at least 1 MB")
    return megabytes


def umask(value: Any) -> int:
    """An integer, or a string read as octal when it looks like one (`022`, `0o22`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            if text.startswith("0o") or (len(text) > 1 and text.startswith("0")):
                number = int(text.removeprefix("0o"), 8)
            else:
                number = int(text, 0)
        except ValueError:
            raise ValueError("not a umask like 022 or 0o22") from None
    else:
        raise ValueError("not a umask like 022 or 0o22")
    if not 0 <= number <= 0o777:
        raise ValueError("must be between 0 and 0o777")
    return number


def _id_or_name(value: Any) -> int | str | None:
    """A user or group by number, or its name (looked up by the caller)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must be 0 or more")
        return value
    text = as_str(value).strip()
    if text.isdigit():
        return int(text)
    if not text:
        raise ValueError("must not be empty")
    return text


def user_id(value: Any) -> int | str | None:
    """A user, by name or uid; a name must exist here (gunicorn checks it when reading)."""
    return _existing(value, pwd.getpwnam, "user")


def group_id(value: Any) -> int | str | None:
    """A group, by name or gid; a name must exist here."""
    return _existing(value, grp.getgrnam, "group")


def _existing(value: Any, look_up: Callable[[str], object], kind: str) -> int | str | None:
    """A number as is; a name only if `look_up` finds it (a KeyError says it does not)."""
    ident = _id_or_name(value)
    if isinstance(ident, str):
        try:
            look_up(ident)
        except KeyError:
            raise ValueError(f"no such {kind} on this system") from None
    return ident


def statsd_host(value: Any) -> str | None:
    """`HOST:PORT`, `[V6]:PORT` or `unix:PATH`, checked now so a typo is a config error."""
    text = optional_str(value)
    if text is not None:
        parse_statsd_host(text)  # its ValueError says what is wrong
    return text


def tcp_address(value: Any) -> str | None:
    """`HOST:PORT` (or `[V6]:PORT`, or `:PORT` for every interface) to listen on over TCP."""
    text = optional_str(value)
    if text is not None and addresses.parse(text).kind != "tcp":
        raise ValueError("not HOST:PORT (a TCP address)")
    return text


def file_mode(value: Any) -> int:
    """A permission mode such as 600 or 0o600, read as octal as chmod reads it."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = as_str(value).strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError("not a file mode like 600 or 0o600") from None
    if not 0 <= mode <= 0o777:
        raise ValueError("not a file mode like 600 or 0o600")
    return mode


def proxy_protocol(value: Any) -> str:
    """gunicorn 27's modes; True/False from older configs mean auto/off."""
    if value is True:
        return "auto"
    if value is False:
        return "off"
    mode = as_str(value).strip().lower()
    if mode not in ("off", "v1", "v2", "auto"):
        raise ValueError("expected off, v1, v2 or auto")
    return mode


def hook(value: Any) -> Callable[..., Any]:
    if not callable(value):
        raise ValueError("not a function")
    return value  # type: ignore[no-any-return]


def fraction(value: Any) -> float:
    """A share of something, more than 0 and at most 1 (`0.9`), or a percentage (`90%`)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = non_negative_float(value.strip()[:-1]) / 100
    else:
        number = non_negative_float(value)
    if not 0 < number <= 1:
        raise ValueError("must be more than 0 and at most 1 (or 90%)")
    return number


# What the `otlp` extra installs (found, not imported: the SDK is imported only in the
# short-lived process that pushes, never in the master).
OTLP_PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
OTLP_MISSING = "needs the otlp extra, which is not installed: pip install 'dynocorn[otlp]'"


def otlp_extra_installed() -> bool:
    for name in OTLP_PACKAGES:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except ImportError:  # a parent package is missing
            return False
    return True


def http_url(value: Any) -> str:
    """An `http://` or `https://` URL with a host."""
    text = as_str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http:// or https:// URL with a host")
    return text


def otlp_metrics_url(value: Any) -> str:
    """Where OTLP/HTTP metrics are posted: the URL as given, or OTLP's `/v1/metrics` path
    when it has none (`http://collector:4318`)."""
    parts = urlsplit(http_url(value))
    if parts.path.strip("/"):
        return parts.geturl()
    return parts._replace(path="/v1/metrics").geturl()


def otlp_endpoint(value: Any) -> str | None:
    """An OTLP metrics URL given explicitly: an error without the extra, since the push that
    was asked for could not happen."""
    if value is None:
        return None
    url = otlp_metrics_url(value)
    if not otlp_extra_installed():
        raise ValueError(OTLP_MISSING)
    return url
