"""A Starlette app on faasd, unchanged: ``serve(app)`` speaks ASGI to it on the handed-over socket.

The lifespan runs once per connection (each connection has its own container): its state is
the greeting of ``GET /``. ``/echo`` answers with the request as JSON, ``GET /events`` streams
Server-Sent Events (``?count=3&interval=1``), ``GET /links`` says where the app is mounted and
what ``url_for`` builds there (under faasd's gateway, ``/function/NAME/...``, the prefix is the
scope's ``root_path``), and ``GET /fail`` raises, which Starlette turns into a 500. A FastAPI
app is served the same way: FastAPI is Starlette underneath.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faas_handler import Event, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "Hello from Starlette on faasd\n"}  # each request sees it as request.state


async def index(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": body.decode("utf-8", "replace"),
            "request_id": request.scope["faas.metadata"].get("id"),
        }
    )


async def events(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("count", 3))
    interval = float(request.query_params.get("interval", 1))
    return StreamingResponse(counting(count, interval), media_type="text/event-stream")


async def counting(count: int, interval: float) -> AsyncIterator[bytes]:
    for n in range(1, count + 1):
        if n > 1:
            await asyncio.sleep(interval)
        yield Event({"tick": n, "of": count}).encode()


async def links(request: Request) -> JSONResponse:
    mounted_at = request.scope["root_path"]
    route_path = request.url.path.removeprefix(mounted_at)
    return JSONResponse({"mounted_at": mounted_at, "path": route_path, "echo": request.url_for("echo").path})


async def fail(request: Request) -> PlainTextResponse:
    raise RuntimeError("this route fails on purpose")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/echo", echo, methods=["GET", "POST", "PUT"]),
        Route("/events", events),
        Route("/links", links),
        Route("/fail", fail),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    serve(app)
