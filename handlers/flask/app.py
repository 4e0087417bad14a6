"""A Flask app on faasd, unchanged: ``serve(app)`` speaks WSGI to it on the handed-over socket.

``GET /`` says hello, ``/echo`` answers with the request as JSON, ``GET /events`` streams
Server-Sent Events (``?count=3&interval=1``), ``GET /links`` says where the app is mounted and
what ``url_for`` builds there (under faasd's gateway, ``/function/NAME/...``, the prefix is the
app's ``SCRIPT_NAME``), and ``GET /fail`` raises, which Flask turns into a 500.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from faas_handler import event_stream, serve
from flask import Flask, Response, jsonify, request, url_for

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "Hello from Flask on faasd\n"


@app.route("/echo", methods=["GET", "POST", "PUT"])
def echo() -> Response:
    return jsonify(
        method=request.method,
        path=request.path,
        query=request.args.to_dict(),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=request.get_data(as_text=True),
        request_id=request.environ["faas.metadata"].get("id"),
    )


@app.get("/events")
def events() -> Response:
    ticks = counting(request.args.get("count", 3, type=int), request.args.get("interval", 1.0, type=float))
    return Response(event_stream(ticks), mimetype="text/event-stream", headers={"Cache-Control": "no-store"})


def counting(count: int, interval: float) -> Iterator[dict[str, Any]]:
    for n in range(1, count + 1):
        if n > 1:
            time.sleep(interval)
        yield {"tick": n, "of": count}


@app.get("/links")
def links() -> Response:
    return jsonify(mounted_at=request.script_root, path=request.path, echo=url_for("echo"))


@app.get("/fail")
def fail() -> str:
    raise RuntimeError("this route fails on purpose")


if __name__ == "__main__":
    serve(app)
