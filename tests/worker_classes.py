"""The worker classes every integration suite runs against, with the flags that pick them."""

from __future__ import annotations

import importlib.util

import pytest

HAVE_GEVENT = importlib.util.find_spec("gevent") is not None

WORKER_CLASSES: list[pytest.ParameterSet] = [
    pytest.param([], id="sync"),
    pytest.param(["-k", "gthread", "--threads", "4"], id="gthread"),
    pytest.param(
        ["-k", "gevent"],
        id="gevent",
        marks=pytest.mark.skipif(not HAVE_GEVENT, reason="gevent is not installed"),
    ),
]


def worker_class_name(worker_args: list[str]) -> str:
    """The class name the master logs (`Using worker: NAME`) for one of the flag sets above."""
    return worker_args[worker_args.index("-k") + 1] if "-k" in worker_args else "sync"


# The ASGI worker serves ASGI apps: the suites that run it too name each app's ASGI twin.
WITH_ASGI: list[pytest.ParameterSet] = [*WORKER_CLASSES, pytest.param(["-k", "asgi"], id="asgi")]


def app_for(worker_args: list[str], wsgi_app: str) -> str:
    """The app a suite serves with this class: `testapps:echo`, or its twin
    `asgi_apps:echo` for the ASGI worker."""
    if worker_class_name(worker_args) == "asgi":
        return "asgi_apps:" + wsgi_app.partition(":")[2]
    return wsgi_app
