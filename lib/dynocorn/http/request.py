"""What the parser hands over: one request head, and its body as it arrives."""

from dynocorn.http.body import Body

__all__ = ["Request"]


class Request:
    """One request head, and its body as it arrives."""

    __slots__ = (
        "body",
        "chunked",
        "complete",
        "content_length",
        "expect_continue",
        "head",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_target",
        "trailers",
        "version",
    )

    def __init__(
        self,
        method: str,
        raw_target: str,
        path: str,
        query: str,
        version: str,
        headers: list[tuple[str, str]],
        keep_alive: bool = True,
        content_length: int | None = None,
        head: bytes = b"",
        chunked: bool = False,
        expect_continue: bool = False,
        body: Body | None = None,
        complete: bool = True,
        trailers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.method = method
        self.raw_target = raw_target  # as sent, latin-1
        self.path = path  # before "?", still percent-encoded
        self.query = query  # after "?", fragment removed
        self.version = version  # "HTTP/1.1" or "HTTP/1.0"
        self.headers = headers  # (name as sent, value without surrounding OWS)
        self.keep_alive = keep_alive  # what the client wants
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue  # only when a body is expected
        # Body bytes parsed and not yet taken (body.py: the parser appends, the consumer
        # takes from the front).
        self.body = Body() if body is None else body
        self.complete = complete  # the whole message, body and trailers included
        self.trailers = [] if trailers is None else trailers
        # The head's bytes as they came (no copy: the parser had them), for the worker's
        # record of what it serves now (scoreboard.py), which keeps their start.
        self.head = head

    def __repr__(self) -> str:
        return (
            f"<Request {self.method} {self.raw_target} {self.version}"
            f" headers={len(self.headers)} complete={self.complete}>"
        )
