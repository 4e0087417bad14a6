"""Routes by path on the gateway, beside routes by ``Host``: pure, read from the request head.

    /function/NAME[/...]   function NAME, the rest of the path its own
    /invoke/NAME           function NAME (GraalFaaS's route)
    /run/PATH              the function go-faas's PATH names (``math/add`` -> ``math-add``)
    GET /health            answered by the gateway itself (GraalFaaS's route)

A path routes only a request whose ``Host`` names no function (an address, or the gateway's
domain alone), so a function reached by its host name keeps every path of its own. The handler
gets the connection with the request untouched: faasd's runtimes strip the prefix themselves.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from faasd.errors import FaasError
from faasd.registry import NAME_PATTERN
from faasd.source.compat import function_for_path

PREFIXES = ("/function/", "/invoke/")
HEALTH_BODY = json.dumps({"status": "UP"}).encode()
HEALTH_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(HEALTH_BODY)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + HEALTH_BODY
)


def request_line(head: bytes) -> tuple[str, str]:
    """The method and the path (query left out, percent-escapes decoded) of a request head."""
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    target = rest.rpartition(" ")[0]
    return method, unquote(target.split("?", 1)[0])


def path_function(head: bytes) -> str | None:
    """The function the request's path names, or None when it names none."""
    _, path = request_line(head)
    for prefix in PREFIXES:
        if path.startswith(prefix):
            name = path[len(prefix) :].split("/", 1)[0]
            return name if NAME_PATTERN.fullmatch(name) else None
    if path.startswith("/run/") and path.strip("/") != "run":
        try:
            return function_for_path(path[len("/run/") :])
        except FaasError:
            return None
    return None


def is_health(head: bytes) -> bool:
    return request_line(head) == ("GET", "/health")
