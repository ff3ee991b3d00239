"""A user's worker class: the sync worker plus a log line, loaded with -k custom_worker.Loud."""

from __future__ import annotations

from dynocorn.workers.sync import SyncWorker


class Loud(SyncWorker):
    name = "loud"

    def setup(self) -> None:
        super().setup()
        self.log.info("custom worker class is serving")


class NotAWorker:
    pass
