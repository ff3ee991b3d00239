"""The manual's shell blocks, run as written, so the manual cannot rot.

The manual is README.md and the pages of docs/. Every ```sh / ```bash / ```shell block is
run with `bash -euo pipefail` in a fresh directory holding a copy of `examples/`, with PORT
set to a free port; a ```console block runs its `$ ` lines. A block is skipped only when its
first line says why: `# not-runnable: <reason>`. Commands outside shell blocks (a `dynocorn
...` line in an untagged block) fail the test, so a new command cannot dodge it by leaving
the block untagged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from honcho_runs import free_port
from server import REPO

README = REPO / "README.md"
MANUAL = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 350  # the reference lives in docs/; the README is read top to bottom
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
NOT_RUNNABLE = re.compile(r"# not-runnable:(.*)")
HEADING = re.compile(r"#+ (.+)")
# The commands this manual uses: a line starting with one of them is a command to run.
COMMANDS = {
    "dynocorn",
    "honcho",
    "make",
    "curl",
    "heroku",
    "pip",
    "python",
    "python3",
    "django-admin",
    "gunicorn",
    "git",
    "kill",
    "export",
    "cat",
    "printf",
    "cp",
    "cd",
}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
BLOCK_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    line: int  # of the opening fence, for the test id and messages
    section: str
    page: str = "README"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def skip_reason(self) -> str | None:
        """The reason given on a `# not-runnable:` first line, or None."""
        first = self.body.split("\n", 1)[0]
        marked = NOT_RUNNABLE.fullmatch(first.strip())
        return marked.group(1).strip() if marked else None

    @property
    def script(self) -> str:
        if self.language == "console":
            return "\n".join(line[2:] for line in self.body.splitlines() if line.startswith("$ "))
        return self.body

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{self.page}-L{self.line}-{slug}"


def readme_blocks(text: str, page: str = "README") -> list[Block]:
    """The fenced blocks, each under its heading (a `#` line inside a block is no heading)."""
    blocks = []
    section = "top"
    fence: tuple[str, int, list[str]] | None = None  # language, line, body lines
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None and line.startswith("```"):
            fence = (line[3:].strip().split(" ")[0], number, [])
        elif fence is not None and line.rstrip() == "```":
            language, start, body = fence
            body_text = "".join(f"{b}\n" for b in body)
            blocks.append(Block(language, body_text, start, section, page))
            fence = None
        elif fence is not None:
            fence[2].append(line)
        elif heading := HEADING.fullmatch(line):
            section = heading.group(1)
    return blocks


def first_word(line: str) -> str:
    """The command a shell line runs: its first word after any VAR=value prefixes."""
    words = line.split()
    while words and ASSIGNMENT.fullmatch(words[0]):
        words.pop(0)
    return words[0] if words else ""


BLOCKS = [
    block for page in MANUAL for block in readme_blocks(page.read_text(encoding="utf-8"), page.stem)
]
SHELL_BLOCKS = [block for block in BLOCKS if block.is_shell]
RUNNABLE = [block for block in SHELL_BLOCKS if block.skip_reason is None]


def test_the_readme_has_runnable_blocks() -> None:
    assert len(RUNNABLE) >= 6, [block.id for block in RUNNABLE]
    assert [block for block in RUNNABLE if block.page == "README"], "the quick start runs"


def test_the_readme_stays_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move reference to docs/"


def test_a_skipped_block_says_why() -> None:
    for block in SHELL_BLOCKS:
        if block.body.lstrip().startswith("# not-runnable"):
            assert block.skip_reason, f"{block.id}: write `# not-runnable: <reason>` first"


def test_commands_are_only_in_shell_blocks() -> None:
    """A command in an untagged or non-shell block would never be run: tag it `sh`."""
    stray = [
        f"{block.id}: {line}"
        for block in BLOCKS
        if not block.is_shell
        for line in block.body.splitlines()
        if first_word(line) in COMMANDS
    ]
    assert stray == []


def test_the_block_parser_sees_what_a_reader_sees() -> None:
    """The checks above are only as good as the parser: try it on a made-up manual."""
    manual = (
        "# Title\n## Start\n```sh\ndynocorn app:app\n```\n"
        "```\nPORT=1 dynocorn --help\n```\n"
        "```sh\n# not-runnable: needs the Heroku CLI\nheroku logs\n```\n"
        "## Logs\n```\n[2026-11-22] [1] [INFO] Starting dynocorn\n```\n"
        "```console\n$ make test\nok\n```\n"
    )
    blocks = readme_blocks(manual)
    assert [(b.language, b.section, b.line) for b in blocks] == [
        ("sh", "Start", 3),
        ("", "Start", 6),
        ("sh", "Start", 9),
        ("", "Logs", 14),
        ("console", "Logs", 17),
    ]
    assert [b.skip_reason for b in blocks if b.is_shell] == [None, "needs the Heroku CLI", None]
    assert first_word(blocks[1].body) == "dynocorn"
    assert first_word(blocks[3].body) == "[2026-11-22]"
    assert blocks[4].script == "make test"


def run_block(script: str, workdir: Path, output: Path) -> int:
    """Run the block in a process group of its own; kill what it leaves behind."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(free_port()),
        "PYTHONPATH": str(REPO / "lib"),  # this checkout's code, whichever one is installed
    }
    # Output to a file, not a pipe: a server the block failed to stop would hold a pipe open.
    with output.open("w") as sink:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return process.wait(BLOCK_TIMEOUT)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # anything the block left running
            except ProcessLookupError:
                pass
            process.wait(5)


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(
        REPO / "examples", workdir / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    output = tmp_path / "output.txt"
    status = run_block(block.script, workdir, output)
    assert status == 0, f"{block.script}\n--- exit status {status}, output:\n{output.read_text()}"
