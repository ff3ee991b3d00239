"""Sans-IO HTTP/1.1: request bytes in, ``Request`` objects out; response framing; errors
that carry their status. No sockets, no configuration objects, nothing else of dynocorn.
"""

from dynocorn.http.errors import (
    ERROR_CONTENT_TYPE,
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    InternalServerError,
    InvalidResponse,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedTransferCoding,
    URITooLong,
    VersionNotSupported,
    error_body,
    reason_phrase,
)
from dynocorn.http.limits import DEFAULT_LIMITS, Limits
from dynocorn.http.parser import Request, RequestParser
from dynocorn.http.response import (
    CONTINUE,
    LAST_CHUNK,
    ResponsePlan,
    as_text,
    encode_chunk,
    http_date,
    plan_response,
)

__all__ = [
    "CONTINUE",
    "DEFAULT_LIMITS",
    "ERROR_CONTENT_TYPE",
    "LAST_CHUNK",
    "BadRequest",
    "HTTPError",
    "HeaderFieldsTooLarge",
    "InternalServerError",
    "InvalidResponse",
    "Limits",
    "Request",
    "RequestParser",
    "RequestTimeout",
    "ResponsePlan",
    "ServiceUnavailable",
    "URITooLong",
    "UnsupportedTransferCoding",
    "VersionNotSupported",
    "as_text",
    "encode_chunk",
    "error_body",
    "http_date",
    "plan_response",
    "reason_phrase",
]
