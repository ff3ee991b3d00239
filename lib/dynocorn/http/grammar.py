"""Pieces of the RFC 9110 grammar (§5.6) shared by the head and chunked-body parsers, as
regular-expression text for ``str`` patterns; ``.encode()`` them for ``bytes`` patterns."""

from dynocorn.http.errors import BadRequest, HeaderFieldsTooLarge

__all__ = ["QUOTED_STRING", "TOKEN", "line_too_long", "new_line_ends"]

# token = 1*tchar (§5.6.2)
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (§5.6.4)
QUOTED_STRING = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'


def new_line_ends(
    buf: bytes | bytearray, scanned: int, where: str
) -> tuple[bytes | bytearray, int]:
    """The bytes of ``buf`` from ``scanned`` on, and how many line ends they hold; a bare
    LF among them is refused. The region starts one byte early when that byte is a CR, so
    that a CRLF split between two reads counts as one line end and not as a bare LF."""
    start = scanned - 1 if scanned and buf[scanned - 1] == 13 else scanned
    region = buf[start:]
    ends = region.count(b"\n")
    if ends and ends != region.count(b"\r\n"):
        raise BadRequest(f"bare LF in {where}")
    return region, ends


def line_too_long(what: str, cap: int) -> HeaderFieldsTooLarge:
    """The 431 for a line (field, trailer or chunk size) over ``cap`` bytes before its CRLF:
    its size is given with the CRLF, as gunicorn counts limit_request_field_size."""
    return HeaderFieldsTooLarge(f"{what} over {cap + 2} bytes with its CRLF")
