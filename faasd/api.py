"""The control API: aiohttp on a unix socket. The only place errors become HTTP statuses.

    POST   /v1/functions/{name}[?tag=T&image=I]   body: the image tarball (streamed)
    GET    /v1/functions
    GET    /v1/functions/{name}
    DELETE /v1/functions/{name}
    GET    /v1/functions/{name}/logs[?tail=N&since=S&follow=1]   -> text lines, chunked
    GET    /healthz

and the original wire API, kept for existing clients:

    POST /api/new        header X-Image-Name: the function's name; body: the tarball -> the IP
    GET  /api/ip/{name}  -> the IP, as text
    GET  /api/list       -> [{"name", "ip"}]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from faasd.config import Config
from faasd.errors import FaasError, ImageTooLarge, InsufficientStorage, InvalidImage, InvalidRequest
from faasd.functions import Functions
from faasd.logs import Logs, parse_query, read_log
from faasd.registry import Function

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
FUNCTIONS = web.AppKey("functions", Functions)
LOGS = web.AppKey("logs", Logs)
UPLOAD_CHUNK_BYTES = 1 << 20


def function_json(function: Function) -> dict[str, Any]:
    version = function.current
    return {
        "name": function.name,
        "ip": str(function.ip),
        "version": version.number,
        "image": version.image,
        "digest": version.digest,
        "entrypoint": list(version.config.entrypoint),
        "cmd": list(version.config.cmd),
        "created": function.created,
        "updated": version.created,
    }


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure leaves as ``{"error": message}`` with the status its class declares."""
    try:
        return await handler(request)
    except FaasError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)
    except Exception:
        log.exception("api error method=%s path=%s", request.method, request.path)
        return web.json_response({"error": "internal error: see the faasd log"}, status=500)


async def receive_upload(request: web.Request) -> Path:
    """Stream the request body to a file under the state dir; memory stays flat."""
    config = request.app[CONFIG]
    fd, name = tempfile.mkstemp(dir=config.uploads_dir, suffix=".tar")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.content.iter_chunked(UPLOAD_CHUNK_BYTES):
                size += len(chunk)
                if size > config.max_upload_bytes:
                    raise ImageTooLarge(f"the upload is over the {config.max_upload_bytes} byte limit")
                await asyncio.to_thread(out.write, chunk)
        if size == 0:
            raise InvalidImage("the request has no body: send the image tarball (docker save IMAGE | faas new NAME)")
        return path
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise InsufficientStorage(f"cannot store the upload under {config.uploads_dir}: {exc.strerror}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def deploy(request: web.Request, name: str) -> Function:
    tag = request.query.get("tag") or None
    image = request.query.get("image") or tag or name
    upload = await receive_upload(request)
    try:
        return await request.app[FUNCTIONS].deploy(name, upload, image=image, tag=tag)
    finally:
        upload.unlink(missing_ok=True)


async def post_function(request: web.Request) -> web.Response:
    function = await deploy(request, request.match_info["name"])
    return web.json_response(function_json(function), status=201)


async def list_functions(request: web.Request) -> web.Response:
    return web.json_response({"functions": [function_json(f) for f in request.app[FUNCTIONS].list()]})


async def get_function(request: web.Request) -> web.Response:
    return web.json_response(function_json(request.app[FUNCTIONS].get(request.match_info["name"])))


async def delete_function(request: web.Request) -> web.Response:
    function = await request.app[FUNCTIONS].remove(request.match_info["name"])
    return web.json_response({"removed": function.name, "ip": str(function.ip)})


async def get_logs(request: web.Request) -> web.StreamResponse:
    """The function's log lines as text; with ``follow``, streamed until the client goes away."""
    name = request.match_info["name"]
    request.app[FUNCTIONS].get(name)  # 400 for a malformed name, 404 for an unknown one
    query = parse_query(request.query, datetime.now(UTC))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    async with contextlib.aclosing(read_log(request.app[LOGS].get(name), query)) as chunks:
        async for chunk in chunks:
            # aiohttp does not cancel a handler whose client left: look, at least once a second.
            if request.transport is None or request.transport.is_closing():
                return response
            if chunk:
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    return response
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def end_follows(app: web.Application) -> None:
    """At shutdown, before aiohttp waits for handlers: let ``?follow=1`` streams finish."""
    app[LOGS].end_follows()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "functions": len(request.app[FUNCTIONS].list())})


async def legacy_new(request: web.Request) -> web.Response:
    name = request.headers.get("X-Image-Name")
    if not name:
        raise InvalidRequest("the X-Image-Name header is missing: it names the function")
    function = await deploy(request, name)
    return web.Response(text=f"{function.ip}\n", status=201)


async def legacy_ip(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.app[FUNCTIONS].get(request.match_info['name']).ip}\n")


async def legacy_list(request: web.Request) -> web.Response:
    return web.json_response([{"name": f.name, "ip": str(f.ip)} for f in request.app[FUNCTIONS].list()])


def make_app(config: Config, functions: Functions, logs: Logs) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app[CONFIG] = config
    app[FUNCTIONS] = functions
    app[LOGS] = logs
    app.on_shutdown.append(end_follows)
    app.add_routes(
        [
            web.post("/v1/functions/{name}", post_function),
            web.get("/v1/functions", list_functions),
            web.get("/v1/functions/{name}", get_function),
            web.delete("/v1/functions/{name}", delete_function),
            web.get("/v1/functions/{name}/logs", get_logs),
            web.get("/healthz", healthz),
            web.post("/api/new", legacy_new),
            web.get("/api/ip/{name}", legacy_ip),
            web.get("/api/list", legacy_list),
        ]
    )
    return app


@contextlib.asynccontextmanager
async def serve_api(config: Config, functions: Functions, logs: Logs) -> AsyncIterator[None]:
    """Serve the API on the unix socket for the duration of the ``async with``."""
    runner = web.AppRunner(make_app(config, functions, logs), access_log=None)
    await runner.setup()
    config.socket_path.unlink(missing_ok=True)
    site = web.UnixSite(runner, str(config.socket_path))
    await site.start()
    os.chmod(config.socket_path, 0o660)
    try:
        yield
    finally:
        await runner.cleanup()
        config.socket_path.unlink(missing_ok=True)
