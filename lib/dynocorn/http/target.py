"""Request targets other than a plain origin-form path: which forms are accepted, and the
path and query of each (RFC 9112 §3.2).

The parser handles the common target itself (a "/" path without a fragment); every other
target comes here. Accepted: origin-form (starts with "/"), absolute-form (``scheme://``
authority, then a path, query or nothing) and, for ``OPTIONS`` only, the asterisk. The
authority must follow RFC 3986's grammar, and ``http``/``https`` need a host (RFC 9110
§4.2.1). Anything else, such as ``s://]ufd/:``, is refused with 400. The path and query
stay as permissive as for origin-form: printable ASCII, already checked by the request-line
pattern.
"""

import ipaddress
import re

from dynocorn.http.errors import BadRequest

__all__ = ["split_target"]

_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_UNRESERVED_SUB_DELIMS = r"A-Za-z0-9\-._~!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_USERINFO = rf"(?:[{_UNRESERVED_SUB_DELIMS}:]|{_PCT})*@"
_REG_NAME = rf"(?:[{_UNRESERVED_SUB_DELIMS}]|{_PCT})*"
_IP_FUTURE = rf"[vV][0-9A-Fa-f]+\.[{_UNRESERVED_SUB_DELIMS}:]+"
# Group 1: the scheme, 2: an IPv6 address in brackets, 3: a reg-name or IPv4 host; the
# authority ends at "/", "?", "#" or the end (a fragment is dropped, as for origin-form).
_ABSOLUTE_FORM = re.compile(
    rf"({_SCHEME})://(?:{_USERINFO})?"
    rf"(?:\[(?:([0-9A-Fa-f:.]+)|{_IP_FUTURE})\]|({_REG_NAME}))"
    r"(?::[0-9]*)?(?=[/?#]|\Z)"
)
_NEEDS_HOST = frozenset({"http", "https"})


def _absolute_form_rest(target: str) -> str:
    """What follows the authority of an absolute-form target; 400 if it is not one."""
    match = _ABSOLUTE_FORM.match(target)
    if match is None:
        raise BadRequest(f"request target in no accepted form: {target[:100]!r}")
    scheme, ipv6, reg_name = match.groups()
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            raise BadRequest(f"invalid IPv6 address in request target {target[:100]!r}") from None
    elif reg_name == "" and scheme.lower() in _NEEDS_HOST:
        raise BadRequest(f"{scheme} request target without a host: {target[:100]!r}")
    return target[match.end() :]


def split_target(method: str, target: str) -> tuple[str, str]:
    """Path and query of ``target``, after refusing (400) a form the method may not use."""
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest(f"asterisk request target with {method}, not OPTIONS")
        return "*", ""
    target = target.partition("#")[0]
    if not target.startswith("/"):
        target = _absolute_form_rest(target)
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query
