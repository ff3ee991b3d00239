"""Request limits, the gunicorn ``limit_request_*`` settings as one value."""

from dataclasses import dataclass

# gunicorn caps ``limit_request_fields`` at this many, and treats 0 as this many.
MAX_FIELDS = 32768
# Used to bound the whole head when ``field_size`` is 0 (unlimited), as gunicorn does.
DEFAULT_FIELD_SIZE = 8190
# Bounds the head when ``request_line`` is 0 (unlimited): "unlimited" must still end.
UNLIMITED_REQUEST_LINE = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """How large a request head may be; 0 means unlimited (within a hard bound)."""

    request_line: int = 4094  # bytes of the request line; over -> 414
    fields: int = 100  # number of header fields; over -> 431
    field_size: int = 8190  # bytes of one field line, its CRLF included; over -> 431
    drop_underscore_headers: bool = True  # drop (not refuse) names containing "_"

    def __post_init__(self) -> None:
        for name in ("request_line", "fields", "field_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Limits.{name} must be a non-negative integer, not {value!r}")

    @property
    def max_fields(self) -> int:
        """The effective number of header fields allowed."""
        return min(self.fields, MAX_FIELDS) if self.fields else MAX_FIELDS

    @property
    def max_head(self) -> int:
        """Bytes a head may occupy in total, so that one never ending is refused."""
        line = self.request_line or UNLIMITED_REQUEST_LINE
        field = self.field_size or DEFAULT_FIELD_SIZE
        return line + 2 + self.max_fields * (field + 2) + 2


DEFAULT_LIMITS = Limits()
