"""The worker classes every integration suite runs against, with the flags that pick them."""

from __future__ import annotations

import importlib.util

import pytest

HAVE_GEVENT = importlib.util.find_spec("gevent") is not None

WORKER_CLASSES = [
    pytest.param([], id="sync"),
    pytest.param(["-k", "gthread", "--threads", "4"], id="gthread"),
    pytest.param(
        ["-k", "gevent"],
        id="gevent",
        marks=pytest.mark.skipif(not HAVE_GEVENT, reason="gevent is not installed"),
    ),
]
