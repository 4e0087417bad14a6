"""The example function: ``GET /`` says hello, ``/echo`` answers with the request as JSON.

In its image it runs as ``python3 /app/app.py`` with ``faas_handler.py`` beside it in /app.
It imports nothing for its type hints at run time: each connection starts it anew.
"""

from __future__ import annotations

import json

from faas_handler import serve

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        echo = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "body": body.decode("utf-8", "replace"),
            "request_id": environ["faas.metadata"].get("id"),
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(echo).encode() + b"\n"]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Hello from faasd\n"]


if __name__ == "__main__":
    serve(app)
