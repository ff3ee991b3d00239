"""`dynocorn ctl [--socket PATH] [--json] COMMAND [ARG]`: ask a running server.

Commands: status, stats, reload, add N, remove N, kill SLOT (control.py runs them). Without
--socket, the one server of this user found in the control socket directory; with several,
the list of their sockets and exit 1. Any failure is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from dynocorn.control import COMMANDS, answers, socket_directory
from dynocorn.units import format_mb

EXIT_OK = 0
EXIT_FAILED = 1
TIMEOUT = 10.0


class CtlError(Exception):
    """One line for stderr."""


def find_socket(explicit: str | None) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise CtlError(f"no control socket at {path} (is the server running?)")
        return path
    directory = socket_directory()
    live = sorted(p for p in directory.glob("*.ctl") if p.is_socket() and answers(p))
    if not live:
        raise CtlError(
            f"no running dynocorn found in {directory}; give its socket with --socket PATH "
            "(its start-up log names it: 'Control socket: ...')"
        )
    if len(live) > 1:
        names = ", ".join(str(p) for p in live)
        raise CtlError(f"{len(live)} servers are running; choose one with --socket: {names}")
    return live[0]


def ask(path: Path, command: str, args: list[str], timeout: float = TIMEOUT) -> Any:
    """The result of `command` on the server at `path`; CtlError with its refusal."""
    request = json.dumps({"command": command, "args": args}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(request)
            reply = _read_all(sock)
        except PermissionError:
            denied = f"{path}: permission denied (only the server's user may use it)"
            raise CtlError(denied) from None
        except OSError as error:
            raise CtlError(f"{path}: {error.strerror or error}") from None
    if not reply:
        raise CtlError(f"{path}: the server closed the connection without answering")
    try:
        message = json.loads(reply)
    except ValueError:
        raise CtlError(f"{path}: not a dynocorn control socket") from None
    if not message.get("ok"):
        raise CtlError(str(message.get("error")))
    return message.get("result")


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _mb(value: int | None) -> str:
    return "-" if value is None else format_mb(value)


def others_running(row: dict[str, Any]) -> str:
    """What a threaded worker runs besides the request shown (its latest): how full its
    threads are is what tells whether to add threads."""
    return f" +{row['running'] - 1} more" if row["running"] > 1 else ""


def status_lines(result: dict[str, Any]) -> list[str]:
    """`status` for people: a row per worker, then the master and the dyno."""
    lines = [
        f"{'SLOT':>4} {'PID':>7} {'STATE':<8} {'REQS':>7} {'RSS':>9} {'USS':>9} {'AGE':>8}  REQUEST"
    ]
    for row in result["workers"]:
        memory = row["memory"] or {}
        request = ""
        if row["running"]:
            request = f"{row['method']} {row['path']} ({row['request_age']:.1f}s)"
            request += others_running(row)
        lines.append(
            f"{row['slot'] if row['slot'] is not None else '-':>4} {row['pid']:>7} "
            f"{row['state']:<8} {row['requests']:>7} {_mb(memory.get('rss')):>9} "
            f"{_mb(memory.get('uss')):>9} {row['age']:>7.0f}s  {request}"
        )
    master, dyno = result["master"], result["memory"]
    lines.append(
        f"master pid {master['pid']}, up {master['uptime']:.0f}s, "
        f"PSS {_mb((master['memory'] or {}).get('pss'))}; "
        f"workers {len(result['workers'])} (target {result['target_workers']})"
    )
    lines.append(
        f"memory {_mb(dyno['held'])} of quota {_mb(dyno['quota'])} "
        f"(budget {_mb(dyno['budget'])}, measured by {dyno['source'] or '-'}); "
        f"backlog {'-' if result['backlog'] is None else result['backlog']}"
    )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynocorn ctl", description="Ask a running dynocorn server (its control socket)."
    )
    parser.add_argument("--socket", "-s", metavar="PATH", help="the server's control socket")
    parser.add_argument("--json", "-j", action="store_true", help="print the answer as JSON")
    parser.add_argument("command", metavar="COMMAND", help=" | ".join(COMMANDS))
    parser.add_argument("args", nargs="*", metavar="ARG", help="N for add/remove, SLOT for kill")
    return parser


def main(argv: list[str]) -> int:
    options = build_parser().parse_args(argv)
    if options.command not in COMMANDS:
        sys.stderr.write(
            f"dynocorn ctl: unknown command {options.command!r}; commands: {', '.join(COMMANDS)}\n"
        )
        return EXIT_FAILED
    try:
        result = ask(find_socket(options.socket), options.command, options.args)
    except CtlError as error:
        sys.stderr.write(f"dynocorn ctl: {error}\n")
        return EXIT_FAILED
    if options.json or options.command not in ("status", "stats"):
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in status_lines(result)))
        if options.command == "stats":
            requests = result["requests"]
            sys.stdout.write(f"requests by status: {json.dumps(requests['by_status'])}\n")
            sys.stdout.write(f"worker recycles by cause: {json.dumps(requests['recycles'])}\n")
    return EXIT_OK
