"""Every gunicorn 27 setting is known to dynocorn, under the same name and flags.

The drop-in promise: a Procfile line or `gunicorn.conf.py` written for gunicorn parses here.
gunicorn itself is a dev dependency so this compares with the real table, not a copy of it.
"""

from __future__ import annotations

import gunicorn
import gunicorn.config
import pytest

from dynocorn.settings import SETTINGS

GUNICORN = {setting.name: setting for setting in gunicorn.config.KNOWN_SETTINGS}
# Flags dynocorn accepts in addition to gunicorn's own spelling (COMPAT.md).
EXTRA_FLAGS = {
    "limit_request_field_size": ("--limit-request-field-size",),
    "asgi_lifespan": ("--lifespan",),  # uvicorn's spelling
}


def test_it_is_gunicorn_27() -> None:
    assert gunicorn.__version__.startswith("27.")


@pytest.mark.parametrize("name", sorted(GUNICORN))
def test_the_setting_exists_with_gunicorns_flags(name: str) -> None:
    assert name in SETTINGS, f"gunicorn's {name} is unknown to dynocorn"
    ours = SETTINGS[name].flags
    expected = tuple(GUNICORN[name].cli or ()) + EXTRA_FLAGS.get(name, ())
    assert ours == expected


# Defaults that differ on purpose, with the reason; everything else must equal gunicorn's.
DIFFERENT_ON_PURPOSE = {
    "workers": "gunicorn reads WEB_CONCURRENCY at import; ours comes from the platform",
    "bind": "gunicorn reads PORT at import; ours comes from the platform",
    "forwarded_allow_ips": "gunicorn reads FORWARDED_ALLOW_IPS at import; ours from the platform",
    "chdir": "gunicorn stores the directory it was imported in; None means the same here",
    "config": "gunicorn's './gunicorn.conf.py'; ours also looks for ./dynocorn.conf.py first",
    "default_proc_name": "our name",
    "user": "gunicorn stores the current euid; None means the same (no switch) here",
    "group": "gunicorn stores the current egid; None means the same here",
    "sendfile": "gunicorn's None means 'on unless SENDFILE=0'; ours is True with the same rule",
    "ssl_version": "a TLS enum in gunicorn; not implemented here",
    "control_socket": "gunicorn expands the home directory at import",
}
PLAIN = sorted(
    name
    for name, setting in GUNICORN.items()
    if name in SETTINGS and not callable(setting.default) and name not in DIFFERENT_ON_PURPOSE
)


@pytest.mark.parametrize("name", PLAIN)
def test_defaults_are_gunicorns(name: str) -> None:
    ours = SETTINGS[name].default
    theirs = GUNICORN[name].default
    # gunicorn keeps some lists as the comma-separated text it parses later.
    if isinstance(ours, list) and isinstance(theirs, str):
        theirs = [part.strip() for part in theirs.split(",")]
    assert ours == theirs
