"""`make run`, as the README's set-up tells a user to type it: the example app under honcho.

The test uses the venv it runs in (`VENV=`) and tells make not to rebuild its install stamp
(`-o`), so it checks the target's command, not pip. Ctrl-C is a SIGINT to the terminal's
foreground process group: here, the group the test creates for make (make, its shell,
honcho). honcho then stops dynocorn, which runs in a session of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

from honcho_runs import (
    VENV_BIN,
    answers,
    exit_statuses,
    free_port,
    honcho_output,
    kill_unstopped_children,
)
from server import REPO, Server

MAKE = shutil.which("make") or "make"
# Relative, as the Makefile's default `.venv`: its recipe puts $(CURDIR)/$(VENV)/bin on PATH.
VENV = os.path.relpath(VENV_BIN.parent, REPO)
HONCHO_KILL_WAIT = 5.0  # honcho SIGKILLs what is still running 5 s after it began stopping
LISTENING = r"web\.1 .*\| .*Listening at: http://\S+:(\d+) "


def group_is_gone(pgid: int, timeout: float) -> bool:
    """Poll until no process is left in the group (make's shell and honcho, once orphaned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_make_run_serves_the_example_and_stops_on_ctrl_c() -> None:
    command = [MAKE, "-o", f"{VENV}/.installed-stamp", f"VENV={VENV}", "run"]
    srv = Server.from_command(command, {"PORT": str(free_port())}, cwd=REPO)
    try:
        port = int(srv.wait_for(LISTENING, timeout=30, stdout=True)[0].group(1))
        response = answers(port)
        assert (response.status_code, response.text) == (200, "Hello, World!")
        # What a user expects on a dyno's log: the request line (the router's logfmt) ...
        srv.wait_for(r"web\.1 .*\| method=GET path=\"/\" status=200 ", timeout=15, stdout=True)
        stopping = time.monotonic()
        os.killpg(srv.pid, signal.SIGINT)  # Ctrl-C
        srv.wait_exit(15)
        assert group_is_gone(srv.pid, 15), honcho_output(srv)
        elapsed = time.monotonic() - stopping
    finally:
        kill_unstopped_children(srv)
        srv.kill_group()
    output = honcho_output(srv)
    assert "system | SIGINT received" in output, output
    assert elapsed < HONCHO_KILL_WAIT, f"make run took {elapsed:.1f} s to stop:\n{output}"
    assert "SIGKILL" not in output
    assert "[INFO] Shutting down: Master" in output
    assert exit_statuses(srv) == {"web.1": 0}, output
    print(f"make run: stopped {elapsed:.2f} s after Ctrl-C")
