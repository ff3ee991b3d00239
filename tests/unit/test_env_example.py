""".env.example documents every environment variable dynocorn reads, and only those.

The variables dynocorn reads come from scanning its source (tests/env_reads.py), so a
variable the code starts reading shows up here until .env.example explains it; a name in
.env.example that nothing reads (a typo, a removed variable) fails too.
"""

from __future__ import annotations

import re
from pathlib import Path

from env_reads import variables_dynocorn_reads

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"

# Names the scan finds that a user never sets, each with the reason.
NOT_FOR_USERS = {
    "DYNOCORN_FDS": "set by the master for the new master it starts on USR2: inherited sockets",
    "DYNOCORN_REEXEC": "set by the master for the new master it starts on USR2: its own pid",
    "PYTHONPATH": "extended for the new master on USR2 so that it imports the same dynocorn",
    "MB": "a unit in the memory-variable table (DYNO_RAM is in MB), not a variable",
    "B": "a unit in the memory-variable table (CONTAINER_MEMORY is in bytes), not a variable",
}

# `# NAME=value` (commented out, as the file ships) or `NAME=value`.
ASSIGNMENT = re.compile(r"^#?[ \t]*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def documented_variables() -> set[str]:
    return set(ASSIGNMENT.findall(ENV_EXAMPLE.read_text()))


def test_env_example_documents_every_variable_dynocorn_reads() -> None:
    missing = variables_dynocorn_reads() - documented_variables() - set(NOT_FOR_USERS)
    assert missing == set(), f"add to .env.example, with what it does: {sorted(missing)}"


def test_env_example_names_only_variables_dynocorn_reads() -> None:
    unread = documented_variables() - variables_dynocorn_reads()
    assert unread == set(), f"nothing reads {sorted(unread)}"


def test_every_exception_is_still_found_by_the_scan() -> None:
    """A name the code no longer reads leaves the exception list with it."""
    assert set(NOT_FOR_USERS) <= variables_dynocorn_reads()
    assert not set(NOT_FOR_USERS) & documented_variables()


def test_systemd_socket_activation_is_documented() -> None:
    text = ENV_EXAMPLE.read_text()
    assert {"LISTEN_FDS", "LISTEN_PID"} <= documented_variables()
    assert "systemd" in text
