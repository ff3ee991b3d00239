"""PEP 3333 glue between the sans-IO HTTP layer and a WSGI application.

Nothing here touches a socket: the worker passes in callables that send and sendfile, and
wsgi.input (wsgi_input.py) one that reads. Everything that is the same for every request is
computed once per worker in `EnvironBuilder`, so the per-request work is one dict display
plus the header loop.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import unquote_to_bytes

from dynocorn import __version__
from dynocorn.http import (
    ERROR_CONTENT_TYPE,
    LAST_CHUNK,
    Request,
    ResponsePlan,
    as_text,
    encode_chunk,
    error_body,
    plan_response,
    reason_phrase,
)
from dynocorn.wsgi_input import EmptyInput, Input

WSGIApp = Callable[[dict[str, Any], Callable[..., Callable[[bytes], None]]], Iterable[bytes]]
Peer = tuple[str, int] | str
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Caches keyed by client-controlled strings stop growing at this size, so a client sending
# endless distinct header names or hosts costs a little speed, never memory.
_CACHE_LIMIT = 1024


@dataclass(frozen=True)
class WSGISettings:
    multithread: bool
    multiprocess: bool
    errors: TextIO
    forwarded_allow_ips: list[str]
    secure_scheme_headers: dict[str, str]
    script_name: str = ""


# "Content-Type" -> "CONTENT_TYPE", "X-Request-Id" -> "HTTP_X_REQUEST_ID". Clients send the
# same few spellings over and over, so one dict lookup replaces upper() + replace() + concat.
_HEADER_KEYS: dict[str, str] = {}


def _header_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
        key = "HTTP_" + key
    if len(_HEADER_KEYS) < _CACHE_LIMIT:
        _HEADER_KEYS[name] = key
    return key


def _join_repeated(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The slow path for requests that repeat a header: join the values with commas."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = _HEADER_KEYS.get(name) or _header_key(name)
        old = headers.get(key)
        if old is None:
            headers[key] = value
        elif key != "CONTENT_LENGTH":  # the parser only lets identical copies through
            headers[key] = f"{old},{value}"
    return headers


def _split_host(host: str) -> tuple[str, str]:
    """`example.com:8080` -> (`example.com`, `8080`); IPv6 keeps its brackets, as in URLs."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, ""
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, port if port.isdigit() else ""


class EnvironBuilder:
    """Builds the environ for each request; constant parts are computed once per worker."""

    def __init__(self, settings: WSGISettings, sockname: tuple[str, int] | str | None) -> None:
        script_name = settings.script_name.rstrip("/")
        self._script_name = script_name
        self._script_prefix = script_name + "/"
        self._base: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.errors": settings.errors,
            "wsgi.multithread": settings.multithread,
            "wsgi.multiprocess": settings.multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": f"dynocorn/{__version__}",
            "SCRIPT_NAME": script_name,
        }
        self._base_size = len(self._base)
        # Without a Host header (HTTP/1.0) the socket names the server; a unix socket has
        # only a path and no port, as in gunicorn.
        if isinstance(sockname, tuple):
            self._server = (str(sockname[0]), str(sockname[1]))
        else:
            self._server = (sockname or "", "")
        self._hosts: dict[str, tuple[str, str]] = {}
        self._secure = [
            (_header_key(name), value.lower())
            for name, value in settings.secure_scheme_headers.items()
        ]
        self._secure_keys = {key for key, _ in self._secure}
        self._trust_all = False
        self._trusted_ips: set[str] = set()
        self._trusted_nets: list[Network] = []
        for entry in settings.forwarded_allow_ips:
            entry = entry.strip()
            if entry == "*":
                self._trust_all = True
            elif "/" in entry:
                self._trusted_nets.append(ipaddress.ip_network(entry, strict=False))
            elif entry:
                self._trusted_ips.add(entry)
                self._trusted_ips.add(str(ipaddress.ip_address(entry)))
        self._trust_cache: dict[str, bool] = {}

    def build(self, request: Request, wsgi_input: Input | EmptyInput, peer: Peer) -> dict[str, Any]:
        # Measured: copying the base and storing keys one by one beats building the
        # headers or the fixed keys as a separate dict first and merging it.
        environ = self._base.copy()
        pairs = request.headers
        keys = _HEADER_KEYS
        for name, value in pairs:
            environ[keys.get(name) or _header_key(name)] = value
        if len(environ) != self._base_size + len(pairs):  # a repeated header was overwritten
            environ = self._base.copy()
            environ.update(_join_repeated(pairs))
        scheme = self._scheme(environ, peer) if self._secure else "http"
        host = environ.get("HTTP_HOST")
        if host:
            parsed = self._hosts.get(host)
            if parsed is None:
                parsed = _split_host(host)
                if len(self._hosts) < _CACHE_LIMIT:
                    self._hosts[host] = parsed
            environ["SERVER_NAME"], port = parsed
            environ["SERVER_PORT"] = port or ("443" if scheme == "https" else "80")
        else:
            environ["SERVER_NAME"], environ["SERVER_PORT"] = self._server
        path = request.path
        script_name = self._script_name
        if script_name and (path == script_name or path.startswith(self._script_prefix)):
            path = path[len(script_name) :]
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        environ["PATH_INFO"] = path
        environ["REQUEST_METHOD"] = request.method
        environ["QUERY_STRING"] = request.query
        environ["RAW_URI"] = request.raw_target
        environ["SERVER_PROTOCOL"] = request.version
        environ["wsgi.url_scheme"] = scheme
        environ["wsgi.input"] = wsgi_input
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"] = peer[0]
            environ["REMOTE_PORT"] = str(peer[1])
        else:  # a unix-socket peer: its name (usually ""), no port, as in gunicorn
            environ["REMOTE_ADDR"] = peer
        return environ

    def scheme_of(self, request: Request, peer: Peer) -> str:
        """What `wsgi.url_scheme` would be, for a caller with no environ (the ASGI scope)."""
        if not self._secure:
            return "http"
        # Only the scheme headers are joined: the rest of the request needs no dict here.
        keys, secure = _HEADER_KEYS, self._secure_keys
        wanted: list[tuple[str, str]] = []
        for pair in request.headers:  # a loop, not a comprehension: no frame per request
            if (keys.get(pair[0]) or _header_key(pair[0])) in secure:
                wanted.append(pair)
        return self._scheme(_join_repeated(wanted), peer) if wanted else "http"

    def _scheme(self, headers: Mapping[str, Any], peer: Peer) -> str:
        # Contradicting headers (one secure, another not) mean someone other than the proxy
        # wrote one of them; gunicorn answers 400, dynocorn settles on the safe "http".
        secure = False
        for key, wanted in self._secure:
            value = headers.get(key)
            if value is not None:
                if value.lower() != wanted:
                    return "http"
                secure = True
        return "https" if secure and self.trusts(peer) else "http"

    def trusts(self, peer: Peer) -> bool:
        """Whether `peer` may tell us the scheme: a listed proxy, or any unix-socket peer."""
        if self._trust_all or not isinstance(peer, tuple):
            return True
        address = peer[0]
        if address in self._trusted_ips:
            return True
        verdict = self._trust_cache.get(address)
        if verdict is None:
            verdict = self._lookup(address)
            if len(self._trust_cache) < _CACHE_LIMIT:
                self._trust_cache[address] = verdict
        return verdict

    def _lookup(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # "::ffff:10.0.0.1" from a dual-stack socket
        return any(
            str(candidate) in self._trusted_ips
            or any(
                candidate in net for net in self._trusted_nets if net.version == candidate.version
            )
            for candidate in candidates
        )


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks; Response sends regular files by sendfile."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.blksize):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _file_span(filelike: Any) -> tuple[int, int] | None:
    """(offset, bytes left) of a regular file, or None for pipes, sockets and file-likes."""
    try:
        st = os.fstat(filelike.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        # tell(), not lseek(): a buffered file that was read from is ahead on the fd.
        offset = int(filelike.tell())
    except (AttributeError, OSError, ValueError):
        return None
    return offset, max(st.st_size - offset, 0)


class Response:
    """start_response, the write() callable, and sending the application's result.

    The head is planned lazily at the first non-empty body chunk so head and chunk leave in
    one send(), and a result whose whole body is known up front gets a Content-Length
    instead of chunked framing.
    """

    __slots__ = (
        "_ended",
        "_plan",
        "_send",
        "_sendfile",
        "body_bytes",
        "headers",
        "headers_sent",
        "keep_alive",
        "keep_alive_allowed",
        "request",
        "status",
        "status_code",
        "truncated",
    )

    def __init__(
        self,
        request: Request,
        send: Callable[[bytes], None],
        *,
        keep_alive: bool,
        sendfile: Callable[[Any, int, int], int] | None = None,
    ) -> None:
        self.request = request
        self._send = send
        self._sendfile = sendfile
        self.keep_alive = keep_alive
        self.keep_alive_allowed = keep_alive  # before a plan without a length lowered it
        # What the app gave: a WSGI status line and text headers, or an ASGI app's int
        # status and bytes headers (plan_response() reads both; text_headers() for logs).
        self.status: str | int | None = None
        self.status_code = 0
        self.headers: Sequence[tuple[Any, Any]] = []
        self.headers_sent = False
        self.body_bytes = 0
        self.truncated = False  # the app wrote more than its Content-Length; worth a log line
        self._plan: ResponsePlan | None = None
        self._ended = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: break the frame <-> traceback cycle
        elif self.status is not None:
            raise RuntimeError("start_response() called again without exc_info")
        self.status = status
        self.headers = headers
        self._plan = None  # a plan made for the replaced status is void
        code = status[:3]
        self.status_code = int(code) if code.isdigit() else 0
        return self.write

    def start_asgi(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """An ASGI app's `http.response.start`: planned as it was given (no decoding on
        the way: plan_response() remembers the plan by these very values)."""
        self.status = self.status_code = status
        self.headers = headers if type(headers) is list or type(headers) is tuple else [*headers]
        self._plan = None

    def text_headers(self) -> list[tuple[str, str]]:
        """The headers as the access log and post_request read them, in WSGI's text form."""
        return [as_text(name, value) for name, value in self.headers]

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"WSGI body items must be bytes, not {type(data).__name__}")
        if not data:
            return  # PEP 3333: empty items must not trigger sending the head
        if not self.headers_sent:
            self._start(data, complete=False)
            return
        payload = self._frame(data)
        if payload:
            self._send(payload)

    def send_result(self, result: Iterable[bytes]) -> None:
        try:
            if not self.headers_sent:
                if type(result) is list or type(result) is tuple:
                    self.send_whole(result[0] if len(result) == 1 else b"".join(result))
                    return
                if isinstance(result, FileWrapper) and self._send_file(result):
                    return
            for data in result:
                self.write(data)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def send_whole(self, body: bytes) -> None:
        """The whole body, before any of it was sent: with its Content-Length."""
        if not isinstance(body, bytes):
            raise TypeError(f"WSGI body items must be bytes, not {type(body).__name__}")
        self._start(body, complete=True)

    def finish(self) -> None:
        if not self.headers_sent:
            self._start(b"", complete=True)
        plan = self._plan
        assert plan is not None
        if plan.chunked and plan.send_body and not self._ended:
            self._ended = True
            self._send(LAST_CHUNK)
        if (
            plan.send_body
            and plan.content_length is not None
            and self.body_bytes < plan.content_length
        ):
            self.keep_alive = False  # the client waits for bytes that will never come

    def close_after(self) -> None:
        """This response, not yet begun, ends the connection (`Connection: close`)."""
        self.keep_alive = self.keep_alive_allowed = False

    def send_error(self, status: int = 500) -> bool:
        """Replace an unsent response with a short error; False when the head already left."""
        if self.headers_sent:
            return False
        body = error_body(status)
        headers = [("Content-Type", ERROR_CONTENT_TYPE), ("Content-Length", str(len(body)))]
        self.status = f"{status} {reason_phrase(status)}"
        self.status_code = status
        self.headers = headers
        self.keep_alive = False
        plan = self._plan_head()
        self._ended = True
        self.headers_sent = True
        if plan.send_body:
            self.body_bytes = len(body)
            self._send(plan.head + body)
        else:
            self._send(plan.head)
        return True

    def _plan_head(self) -> ResponsePlan:
        if self.status is None:
            raise RuntimeError("the application did not call start_response()")
        request = self.request
        plan = plan_response(
            self.status,
            self.headers,
            version=request.version,
            method=request.method,
            keep_alive=self.keep_alive,
        )
        self._plan = plan
        self.keep_alive = plan.keep_alive
        return plan

    def _with_length(self, plan: ResponsePlan, length: int) -> ResponsePlan:
        """The plan for a body known in full: with a Content-Length, unless the app framed
        it already (or the status has no body to measure)."""
        if plan.framed:
            return plan
        code = self.status_code
        if code < 200 or code == 204 or code == 304:
            return plan
        if length == 0 and self.request.method == "HEAD":
            return plan  # the app did not say how long the GET body would be
        # A new list: apps often pass the same module-level headers list on every request.
        if type(self.status) is int:  # an ASGI app's: its headers are bytes
            self.headers = [*self.headers, (b"content-length", b"%d" % length)]
        else:
            self.headers = [*self.headers, ("Content-Length", str(length))]
        # Planned without a length, an HTTP/1.0 body had to end with the connection; with
        # one, the connection may live on, as the server and client allowed.
        self.keep_alive = self.keep_alive_allowed
        return self._plan_head()

    def _start(self, data: bytes, *, complete: bool) -> None:
        plan = self._plan or self._plan_head()
        if complete:
            plan = self._with_length(plan, len(data))
            if not plan.chunked and plan.content_length == len(data):
                # The whole body, exactly as declared (the usual list result): no framing.
                self.headers_sent = True
                if data and plan.send_body:
                    self.body_bytes = len(data)
                    self._send(plan.head + data)
                else:
                    self._send(plan.head)
                return
        payload = self._frame(data) if data else b""
        if complete and plan.chunked and plan.send_body:
            payload += LAST_CHUNK
            self._ended = True
        self.headers_sent = True  # set first: after a partial send, no error page may follow
        self._send(plan.head + payload if payload else plan.head)

    def _frame(self, data: bytes) -> bytes:
        """What goes on the wire for `data`: capped at Content-Length, chunk-framed."""
        plan = self._plan
        assert plan is not None
        if not plan.send_body:
            return b""
        if plan.content_length is not None:
            room = plan.content_length - self.body_bytes
            if len(data) > room:
                data = data[:room]
                self.truncated = True
                self.keep_alive = False
                if not data:
                    return b""
        self.body_bytes += len(data)
        return encode_chunk(data) if plan.chunked else data

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with sendfile(); False leaves it to plain iteration."""
        span = _file_span(wrapper.filelike)
        if span is None:
            return False
        offset, size = span
        # Known length: no chunked framing, even without sendfile.
        plan = self._with_length(self._plan or self._plan_head(), size)
        if self._sendfile is None:
            return False
        if plan.chunked:
            return False
        self.headers_sent = True
        self._send(plan.head)
        if not plan.send_body:
            return True
        count = size if plan.content_length is None else min(size, plan.content_length)
        while count > 0:
            sent = self._sendfile(wrapper.filelike, offset, count)
            if sent <= 0:
                break  # the file shrank; finish() sees the short body and closes
            offset += sent
            count -= sent
            self.body_bytes += sent
        return True


def call_app(app: WSGIApp, environ: dict[str, Any], response: Response) -> None:
    """Run the app and send its response; exceptions go to the worker, which logs them and
    calls `response.send_error()`."""
    response.send_result(app(environ, response.start_response))
    response.finish()
