"""A request sent to a function from the page's form, and what the function answered.

The browser cannot read a function's answer itself: the function is on another origin (its
own address), which sends no CORS headers. So the daemon sends the request, as any local
client would, and returns the answer as JSON, its body cut at ``MAX_BODY_BYTES``. Only a
session of the page may ask, and only for a deployed function's own address.
"""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from faasd.errors import InvalidRequest
from faasd.functions import Functions
from faasd.registry import validate_name

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A path and query as sent on the request line: printable ASCII, no spaces.
TARGET = re.compile(r"/[\x21-\x7e]{0,2047}")
CONTENT_TYPE = re.compile(r"[\x20-\x7e]{1,200}")
MAX_REQUEST_BYTES = 64 << 10
MAX_BODY_BYTES = 64 << 10
# Beyond the function's own timeout, for its container to start and the answer to travel.
EXTRA_SECONDS = 5.0


def parse_probe(fields: Any) -> tuple[str, str, bytes, str | None]:
    """Method, target, body and content type of the form, each checked; ``InvalidRequest`` else."""
    if not isinstance(fields, dict):
        raise InvalidRequest('send {"method", "path", "body", "content_type"} as a JSON object')
    method = str(fields.get("method", "GET")).upper()
    if method not in METHODS:
        raise InvalidRequest(f"the method {method[:16]!r} is not one of {', '.join(sorted(METHODS))}")
    target = fields.get("path", "/")
    if not isinstance(target, str) or not TARGET.fullmatch(target):
        raise InvalidRequest("the path starts with / and holds printable ASCII, no spaces, at most 2048 characters")
    body = fields.get("body") or ""
    content_type = fields.get("content_type") or None
    if not isinstance(body, str) or len(body.encode()) > MAX_REQUEST_BYTES:
        raise InvalidRequest(f"the body is text of at most {MAX_REQUEST_BYTES} bytes")
    if content_type is not None and not (isinstance(content_type, str) and CONTENT_TYPE.fullmatch(content_type)):
        raise InvalidRequest("the content type is one line of printable ASCII")
    return method, target, body.encode(), content_type


async def send(functions: Functions, port: int, request: web.Request) -> web.Response:
    """Send the form's request to function ``{name}`` and answer with its status, headers and body."""
    name = validate_name(request.match_info["name"])
    function = functions.get(name)
    if request.content_length is None or request.content_length > 2 * MAX_REQUEST_BYTES:
        raise InvalidRequest(f"send the form as JSON of at most {2 * MAX_REQUEST_BYTES} bytes, with its length")
    try:
        fields = await request.json()
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from exc
    method, target, body, content_type = parse_probe(fields)
    url = URL(f"http://{function.ip}:{port}{target}", encoded=True)
    headers = {"Content-Type": content_type} if content_type else {}
    timeout = aiohttp.ClientTimeout(total=function.current.limits.timeout_seconds + EXTRA_SECONDS)
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            async with session.request(
                method, url, data=body or None, headers=headers, allow_redirects=False
            ) as answer:
                received = bytearray()
                async for chunk in answer.content.iter_any():
                    received += chunk
                    if len(received) > MAX_BODY_BYTES:
                        break
                status, reason, answer_headers = answer.status, answer.reason, list(answer.headers.items())
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        return web.json_response({"error": f"no answer from {name} at {function.ip}: {reason}"}, status=502)
    return web.json_response(
        {
            "status": status,
            "reason": reason,
            "headers": answer_headers,
            "body": received[:MAX_BODY_BYTES].decode(errors="replace"),
            "truncated": len(received) > MAX_BODY_BYTES,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
    )
