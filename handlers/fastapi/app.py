"""A FastAPI app on faasd, unchanged: ``serve(app)`` speaks ASGI to it on the handed-over socket.

The lifespan runs once per connection (each connection has its own container): its state is
the greeting of ``GET /``. ``/echo`` answers with the request as JSON, ``GET /events`` streams
Server-Sent Events (``?count=3&interval=1``, parsed by FastAPI), ``GET /links`` says where the
app is mounted and what ``url_for`` builds there (under faasd's gateway, ``/function/NAME/...``,
the prefix is the scope's ``root_path``), and ``GET /fail`` raises, which FastAPI turns into a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faas_handler import Event, serve
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "Hello from FastAPI on faasd\n"}  # each request sees it as request.state


app = FastAPI(lifespan=lifespan)


@app.get("/", response_class=PlainTextResponse)
async def index(request: Request) -> str:
    return request.state.greeting


@app.api_route("/echo", methods=["GET", "POST", "PUT"])
async def echo(request: Request) -> dict[str, Any]:
    body = await request.body()
    return {
        "method": request.method,
        "path": request.url.path,
        "query": dict(request.query_params),
        "headers": dict(request.headers),
        "body": body.decode("utf-8", "replace"),
        "request_id": request.scope["faas.metadata"].get("id"),
    }


@app.get("/events")
async def events(count: int = 3, interval: float = 1.0) -> StreamingResponse:
    return StreamingResponse(counting(count, interval), media_type="text/event-stream")


async def counting(count: int, interval: float) -> AsyncIterator[bytes]:
    for n in range(1, count + 1):
        if n > 1:
            await asyncio.sleep(interval)
        yield Event({"tick": n, "of": count}).encode()


@app.get("/links")
async def links(request: Request) -> dict[str, Any]:
    mounted_at = request.scope["root_path"]
    route_path = request.url.path.removeprefix(mounted_at)
    return {"mounted_at": mounted_at, "path": route_path, "echo": request.url_for("echo").path}


@app.get("/fail")
async def fail() -> None:
    raise RuntimeError("this route fails on purpose")


if __name__ == "__main__":
    serve(app)
