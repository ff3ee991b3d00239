"""Start the real `dynocorn` command on port 0 and talk to it.

The server's stderr is read by a thread; tests wait for log lines with a bounded timeout
instead of sleeping. Only processes this harness started are signalled, by PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

import cgroups

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "tests" / "apps"
DYNOCORN = [sys.executable, "-m", "dynocorn"]
LISTENING = re.compile(r"Listening at: (http://\S+|unix:\S+) \((\d+)\)")
BOOTED = re.compile(r"\[(\d+)\] \[INFO\] Booting worker with pid: (\d+)")


class Server:
    def __init__(
        self,
        args: list[str],
        *,
        cwd: Path = APPS,
        env: dict[str, str] | None = None,
        bind: str | None = "127.0.0.1:0",
        cgroup_limit: int | None = None,
    ) -> None:
        command = [*DYNOCORN, *(["-b", bind] if bind else []), *args]
        self._start(command, env or {}, cwd, (), cgroup_limit)

    @classmethod
    def from_command(
        cls,
        command: list[str],
        env: dict[str, str] | None = None,
        *,
        cwd: Path = APPS,
        pass_fds: tuple[int, ...] = (),
    ) -> Server:
        """A server started by a command of the test's own (a launcher, a wrapper)."""
        server = cls.__new__(cls)
        server._start(command, env or {}, cwd, pass_fds, None)
        return server

    def _start(
        self,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        pass_fds: tuple[int, ...],
        cgroup_limit: int | None,
    ) -> None:
        # Its own memory cgroup, as on a dyno (see cgroups.py); `cgroup_limit` sets the
        # dyno's memory limit in it.
        self.cgroup = cgroups.create(cgroup_limit)
        if self.cgroup is not None:
            command = cgroups.command_in(self.cgroup, command)
        environ = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(REPO / "lib"),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=pass_fds,
            start_new_session=True,  # its own process group: ours to clean up, nobody else's
        )
        self.lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.process.stderr, self.lines), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.process.stdout, self.stdout_lines), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()
        self.url = ""
        self.port = 0

    def _read(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(
        self, pattern: str, timeout: float = 15.0, count: int = 1, stdout: bool = False
    ) -> list[re.Match[str]]:
        """Wait until `pattern` matches `count` log lines; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        source = self.stdout_lines if stdout else self.lines
        with self._changed:
            while True:
                matches = [m for line in source if (m := regex.search(line))]
                if len(matches) >= count:
                    return matches
                if self.process.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"server exited ({self.process.returncode}) before {pattern!r}:\n{self.log}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r} x{count}:\n{self.log}")
                self._changed.wait(min(remaining, 0.2))

    def wait_listening(self, workers: int = 1, timeout: float = 20.0) -> Server:
        match = self.wait_for(LISTENING.pattern, timeout)[0]
        self.url = match.group(1)
        if self.url.startswith("http://"):
            self.port = int(self.url.rsplit(":", 1)[1])
        self.wait_for(r"Booting worker with pid", timeout, count=workers)
        self.wait_for_workers(workers, timeout)
        return self

    def wait_for_workers(self, workers: int, timeout: float = 20.0) -> None:
        """Until `workers` worker processes are alive. Alive is not ready: a worker may still
        be loading the app (a test that needs an answer sends a request, or waits for a
        post_worker_init line)."""
        deadline = time.monotonic() + timeout
        while len(self.worker_pids()) < workers:
            if time.monotonic() > deadline:
                raise AssertionError(f"{workers} workers not alive:\n{self.log}")
            time.sleep(0.05)

    def booted_pids(self) -> list[int]:
        return [int(m.group(2)) for line in self.lines if (m := BOOTED.search(line))]

    def worker_pids(self) -> list[int]:
        """Live children of the master (by parent PID, no guessing by name)."""
        pids = []
        try:
            children = psutil.Process(self.pid).children()
        except (psutil.Error, OSError):
            return []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    pids.append(child.pid)
            except (psutil.Error, OSError):
                pass  # exited between the two looks
        return pids

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(5)
            raise AssertionError(f"server did not stop within {timeout}s:\n{self.log}") from None

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def kill_group(self) -> None:
        """Kill whatever is left in the process group we created, then release the pipes."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(5)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        if self.cgroup is not None:
            cgroups.remove(self.cgroup)


@contextmanager
def running(args: list[str], workers: int = 1, **kwargs: object) -> Iterator[Server]:
    server = Server(args, **kwargs)  # type: ignore[arg-type]
    try:
        server.wait_listening(workers)
        yield server
    finally:
        try:
            if server.process.poll() is None:
                server.stop()
        finally:
            server.kill_group()
