"""Pieces of the RFC 9110 grammar (§5.6) shared by the head and chunked-body parsers, as
regular-expression text for ``str`` patterns; ``.encode()`` them for ``bytes`` patterns."""

__all__ = ["QUOTED_STRING", "TOKEN"]

# token = 1*tchar (§5.6.2)
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (§5.6.4)
QUOTED_STRING = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
