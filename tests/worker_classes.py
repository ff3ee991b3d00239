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
