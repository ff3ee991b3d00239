"""The request corpus: raw requests with the outcome a server must produce for them.

Layout: ``tests/corpus/valid/NAME.http`` and ``tests/corpus/invalid/NAME.http``, each
with a sidecar ``NAME.json``.

``.http`` files are ASCII text in which real line breaks are ignored (so that files
stay readable and survive git's line-ending conversions) and bytes are written as:

    \\r  CR        \\n  LF (so a CRLF is the four characters \\r\\n)
    \\t  HTAB      \\xHH  any byte, e.g. \\x00 or \\xe9
    \\\\  one backslash

Everything else stands for itself. The ``.json`` sidecar holds, for a valid case, the
list of requests the bytes contain::

    [{"method": "GET", "path": "/", "query": "", "version": "HTTP/1.1",
      "headers": [["Host", "example.com"]], "body": "", "keep_alive": true}]

(optional keys: ``raw_target``, ``content_length``, ``chunked``, ``expect_continue``,
``trailers``; ``body`` is latin-1 text), and for an invalid case the response status:
``{"status": 400}``. Requests after one that asks to close are not listed: a server
ignores them. An invalid case is refused while its bytes arrive, before end of input,
so it can be replayed over a socket that stays open.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"

_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|(.))", re.DOTALL)
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}


def decode_http_text(text: str) -> bytes:
    """The bytes a ``.http`` file stands for."""
    if not text.isascii():
        raise ValueError("a .http file must be ASCII; write other bytes as \\xHH")

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return chr(int(match.group(1), 16))
        if match.group(2) not in _SIMPLE:
            raise ValueError(f"unknown escape \\{match.group(2)} in .http text")
        return _SIMPLE[match.group(2)]

    text = text.replace("\r", "").replace("\n", "")
    return _ESCAPE.sub(replace, text).encode("latin-1")


def encode_http_text(raw: bytes) -> str:
    """The ``.http`` text for ``raw``, with a real line break after every LF."""
    out = []
    for byte in raw:
        char = chr(byte)
        if char == "\\":
            out.append("\\\\")
        elif char == "\r":
            out.append("\\r")
        elif char == "\n":
            out.append("\\n\n")
        elif char == "\t":
            out.append("\\t")
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    text = "".join(out)
    return text if text.endswith("\n") else text + "\n"


@dataclass(frozen=True)
class Case:
    name: str  # "valid/simple_get"
    raw: bytes
    expected: Any  # the parsed sidecar: a list of request dicts, or {"status": N}

    @property
    def valid(self) -> bool:
        return isinstance(self.expected, list)

    @property
    def status(self) -> int | None:
        """The status an invalid case must be refused with; None for valid cases."""
        return None if self.valid else int(self.expected["status"])

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The requests a valid case holds, in order; empty for invalid cases."""
        return list(self.expected) if self.valid else []


def load_cases(root: Path = CORPUS) -> list[Case]:
    """Every case under ``root``, valid ones first, each group sorted by name."""
    cases = []
    for kind in ("valid", "invalid"):
        for path in sorted((root / kind).glob("*.http")):
            sidecar = path.with_suffix(".json")
            expected = json.loads(sidecar.read_text(encoding="utf-8"))
            if (kind == "valid") != isinstance(expected, list):
                raise ValueError(f"{sidecar}: a {kind} case needs a {kind} expectation")
            raw = decode_http_text(path.read_text(encoding="ascii"))
            cases.append(Case(f"{kind}/{path.stem}", raw, expected))
    return cases
