"""Worker classes: `sync` (default), `gthread`, `gevent`, `asgi` (ASGI 3 apps), or a dotted
path to a Worker subclass.

A worker class of your own (`-k package.module.ClassName`) subclasses one of two bases:

`dynocorn.workers.base.Worker`: the lifecycle (fork, signals, heartbeat, recycling, hooks).
Implement `run()`, which must

- serve on `self.listeners` (each has `.sock`, a listening socket shared with the other
  workers, and `.fileno()`) until `self.alive` is False, then return; TERM, max-requests
  and lifetime recycling set it to False, INT and QUIT make the process exit at once;
- call `self.notify()` at least once a second: the master kills a worker silent for
  `timeout` seconds;
- return when `self.parent_changed()` (the master has gone);
- call `self.request_done()` after each request (max-requests and memory recycling).

`dynocorn.workers.http_worker.HttpWorker` (a Worker): also dynocorn's HTTP parser and WSGI
layer. Its `run()` must in addition

- call `self.setup_http()` once, before the first connection;
- wrap each accepted socket with `self.new_connection(sock, peer, listener.fileno())`,
  which gives a `Connection` with its own sans-IO parser (`connection.parser`);
- feed the bytes it reads to `connection.parser.feed()` (`feed_eof()` at EOF) and pass each
  request that appears in `connection.parser.requests`, in order, to
  `self.handle(connection, request)`, which runs the app, answers, and counts the request
  (it calls `request_done()`); it returns whether the connection may serve another
  request: close it when False. A `dynocorn.http.HTTPError` from the parser is a bad
  request: `connection.refuse(error)`, then close.

The connection's own reads and writes (the request body, the response) set the socket's
timeouts themselves and leave it non-blocking: set a timeout before your own recv() if you
block on it. tests/apps/custom_worker.py has a minimal example (`Minimal`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.workers.base import Worker

BUILTIN = {
    "sync": "dynocorn.workers.sync.SyncWorker",
    "gthread": "dynocorn.workers.gthread.ThreadWorker",
    "gevent": "dynocorn.workers.ggevent.GeventWorker",
    "asgi": "dynocorn.workers.asgi.AsgiWorker",
}


class WorkerClassError(Exception):
    pass


def worker_class_for(cfg: Config) -> type[Worker]:
    from dynocorn.workers.base import Worker

    name = cfg.worker_class
    path = BUILTIN.get(name.lower(), name)
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise WorkerClassError(
            f"unknown worker class {name!r}: use sync, gthread, gevent, asgi or a dotted path"
        )
    try:
        module = importlib.import_module(module_name)
        worker_class = getattr(module, class_name)
    except (ImportError, AttributeError) as error:
        raise WorkerClassError(
            str(error) if name in BUILTIN else f"cannot load {path}: {error}"
        ) from None
    if not (isinstance(worker_class, type) and issubclass(worker_class, Worker)):
        raise WorkerClassError(f"{name!r} is not a subclass of dynocorn.workers.base.Worker")
    return worker_class
