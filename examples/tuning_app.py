"""A Flask app shaped like a real one, for docs/tuning.md: it holds about 40 MB once
imported, one route waits on "the database" and one computes.

`dynocorn --chdir examples --memory-quota 512MB --metrics-interval 5 tuning_app:app`, then
`wrk -s examples/router.lua` puts a mix of both routes on it (see docs/tuning.md).
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

# What a real app holds after import (ORM models, templates, a reference table): here a
# catalogue cached at start, 100,000 small dicts, about 42 MB of Python objects. Objects,
# not one buffer, so that garbage collections and reference counts touch them as a real
# app's are touched.
CATALOGUE: dict[int, dict[str, object]] = {
    n: {"sku": f"SKU-{n:08d}", "name": f"Product {n}", "price": n % 997 / 100, "tags": ("a", "b")}
    for n in range(100_000)
}
DATABASE_WAIT = 0.050  # seconds a query takes: the worker waits, its CPU does not work
COMPUTE_CPU = 0.005  # seconds of CPU a /compute request spends

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, object]:
    return {"message": "Hello from the tuning example", "pid": os.getpid()}


@app.get("/db")
def from_the_database() -> dict[str, object]:
    """A page that waits 50 ms on a query, as most pages of a web app do."""
    time.sleep(DATABASE_WAIT)
    first = int(request.args.get("from", "0")) % len(CATALOGUE)
    return {"products": [CATALOGUE[(first + n) % len(CATALOGUE)] for n in range(10)]}


@app.get("/compute")
def compute() -> dict[str, object]:
    """A page that computes for 5 ms of CPU (a report, a big template): pure Python, so it
    holds the GIL. The deadline is CPU time, so it costs the same on a busy machine."""
    deadline = time.thread_time() + COMPUTE_CPU
    total = 0.0
    n = 0
    while time.thread_time() < deadline:
        for _ in range(100):
            item = CATALOGUE[n % len(CATALOGUE)]
            price = item["price"]
            total += price if isinstance(price, float) else 0.0
            n += 1
    return {"items": n, "total": round(total, 2)}
