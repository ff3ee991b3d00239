"""Worker classes: `sync` (default), `gthread`, `gevent`, or a dotted path to a Worker subclass.

A class of your own subclasses `dynocorn.workers.base.Worker` (the lifecycle: signals,
heartbeat, recycling) and implements `run()`; to reuse dynocorn's HTTP and WSGI handling,
subclass `dynocorn.workers.http_worker.HttpWorker` and call `self.handle(connection,
request)` for each parsed request.
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
            f"unknown worker class {name!r}: use sync, gthread, gevent or a dotted path"
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
