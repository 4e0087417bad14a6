"""Routes by path on the gateway, beside routes by ``Host``: pure, read from the request head.

    /function/NAME[/...]   function NAME, the rest of the path its own
    /invoke/NAME           function NAME (GraalFaaS's route)
    /run/PATH[?version=T]  the function go-faas's PATH names (``math/add`` -> ``math-add``); with
                           ``version``, its version uploaded at Unix time T
    GET /health            answered by the gateway itself (GraalFaaS's route)

A path routes only a request whose ``Host`` names no function (an address, or the gateway's
domain alone), so a function reached by its host name keeps every path of its own. The handler
gets the connection with the request untouched, and the route's prefix (``/function/NAME``,
``/invoke/NAME``, ``/run/PATH``) in its handoff metadata: the SDK makes it the app's
``SCRIPT_NAME`` / ``root_path``, and the runtimes give source functions the path after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from faasd.errors import FaasError, InvalidRequest
from faasd.registry import NAME_PATTERN
from faasd.source.compat import function_for_path

PREFIXES = ("/function/", "/invoke/")
# The prefix travels in the handoff metadata (1024 bytes in all): a longer one is refused.
MAX_PREFIX_BYTES = 320
HEALTH_BODY = json.dumps({"status": "UP"}).encode()
HEALTH_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(HEALTH_BODY)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + HEALTH_BODY
)


@dataclass(frozen=True)
class Target:
    """Where a path sends a connection: the function, the prefix its app is mounted under
    (percent-escapes decoded), and go-faas's ``?version=`` (a Unix time) when it names one."""

    function: str
    prefix: str
    uploaded_at: int | None = None


def request_target(head: bytes) -> tuple[str, str, str]:
    """The method, the path (percent-escapes decoded) and the query of a request head."""
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    path, _, query = rest.rpartition(" ")[0].partition("?")
    return method, unquote(path), query


def path_route(head: bytes) -> Target | None:
    """The route the request's path names, or None when it names none."""
    _, path, query = request_target(head)
    for prefix in PREFIXES:
        if path.startswith(prefix):
            name = path[len(prefix) :].split("/", 1)[0]
            return Target(name, prefix + name) if NAME_PATTERN.fullmatch(name) else None
    if path.startswith("/run/") and path.strip("/") != "run":
        try:
            name = function_for_path(path[len("/run/") :])
        except FaasError:
            return None
        prefix = path.rstrip("/")
        if len(json.dumps(prefix)) > MAX_PREFIX_BYTES:
            raise InvalidRequest(f"the path is over {MAX_PREFIX_BYTES} bytes: name the script by a shorter one")
        return Target(name, prefix, uploaded_at(query))
    return None


def uploaded_at(query: str) -> int | None:
    """go-faas's ``?version=TIMESTAMP``: the Unix time a version was uploaded at, or None."""
    values = parse_qs(query, keep_blank_values=True).get("version")
    if values is None:
        return None
    if len(values) > 1 or not (values[0].isascii() and values[0].isdigit()) or len(values[0]) > 12:
        raise InvalidRequest("?version= takes one Unix timestamp, the version the upload returned")
    return int(values[0])


def is_health(head: bytes) -> bool:
    return request_target(head)[:2] == ("GET", "/health")
