"""A plain handler on faasd: ``handle(request)`` gets a Request and returns the response.

``GET /`` says hello, ``/echo`` answers with the request as JSON (a dict becomes JSON),
``GET /events`` streams Server-Sent Events (``?count=3&interval=1``), ``GET /fail`` raises,
which serve() turns into a 500, and anything else is a 404 from a ``(status, body)`` tuple.
"""

from __future__ import annotations

import time

from faas_handler import Request, serve, sse

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in every container
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def handle(request: Request) -> Any:
    if request.path == "/":
        return "Hello from a plain handler on faasd\n"
    if request.path == "/echo":
        return {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "body": request.body.decode("utf-8", "replace"),
            "request_id": request.metadata.get("id"),
        }
    if request.path == "/events":
        return sse(counting(int(request.query.get("count", 3)), float(request.query.get("interval", 1))))
    if request.path == "/fail":
        raise RuntimeError("this route fails on purpose")
    return 404, {"error": f"no route for {request.path}"}


def counting(count: int, interval: float) -> Iterator[dict[str, Any]]:
    for n in range(1, count + 1):
        if n > 1:
            time.sleep(interval)
        yield {"tick": n, "of": count}


if __name__ == "__main__":
    serve(handle)
