"""Where a setting's value came from: a value the code decides on, and a line for people.

Code asks `source.kind` (is it the default? did the platform decide?); only messages and
`--print-config` show `str(source)`, which reads as gunicorn users expect ("command line",
"config file (gunicorn.conf.py)", "platform (PORT=5000)").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    DEFAULT = "default"
    PLATFORM = "platform"  # derived from what the platform says (PORT, DYNO, a cgroup, ...)
    CONFIG_FILE = "config file"
    FOUND_CONFIG_FILE = "found in the working directory"  # a config file nobody named
    CMD_ARGS_VARIABLE = "*_CMD_ARGS"  # GUNICORN_CMD_ARGS or DYNOCORN_CMD_ARGS
    COMMAND_LINE = "command line"


@dataclass(frozen=True)
class Source:
    kind: Kind
    # Which one: the config file's name, the variable's, the platform's reason.
    detail: str = ""
    # Why, added in parentheses: the worker count's explanation, or "threads=4" for a
    # worker class that --threads chose.
    note: str = ""

    def __str__(self) -> str:
        if self.kind is Kind.CMD_ARGS_VARIABLE:
            shown = self.detail
        elif self.detail:
            shown = f"{self.kind.value} ({self.detail})"
        else:
            shown = self.kind.value
        return f"{shown} ({self.note})" if self.note else shown

    def noting(self, note: str) -> Source:
        """The same source, with a reason shown after it."""
        return Source(self.kind, self.detail, note)


DEFAULT = Source(Kind.DEFAULT)
COMMAND_LINE = Source(Kind.COMMAND_LINE)
FOUND_IN_WORKING_DIRECTORY = Source(Kind.FOUND_CONFIG_FILE)


def platform(why: str) -> Source:
    """Derived from the platform: `why` names what it said ("PORT=5000", "DYNO=web.1")."""
    return Source(Kind.PLATFORM, why)


def config_file(shown: str) -> Source:
    return Source(Kind.CONFIG_FILE, shown)


def cmd_args_variable(variable: str) -> Source:
    return Source(Kind.CMD_ARGS_VARIABLE, variable)
