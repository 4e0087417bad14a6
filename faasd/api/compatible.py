"""go-faas's control routes, for its clients (docs/functions.md, "Compatible routes").

    POST /upload         body {"path", "language", "code"} -> {"path", "language", "version"}
    POST /run-now        body {"language", "code", "input", "stream"} -> {"data", "type"}, or SSE

What invokes a deployed function (go-faas's ``/run/PATH``, GraalFaaS's ``/invoke/ID`` and
``/health``) sits on the gateway instead (``faasd.paths``). The shapes are ``faasd.source.compat``'s.
"""

from __future__ import annotations

from aiohttp import web

from faasd.api.common import CONFIG, SOURCES, query_params, read_json
from faasd.api.source import MAX_SOURCE_BODY_FACTOR, run_streamed
from faasd.source import compat


async def post_upload(request: web.Request) -> web.Response:
    """go-faas's ``POST /upload``: the script as a new version of the function its path names."""
    query_params(request)
    config = request.app[CONFIG]
    body = await read_json(request, MAX_SOURCE_BODY_FACTOR * config.max_source_bytes + 65536)
    name, source = compat.upload_request(body)
    sources = request.app[SOURCES]
    function = await sources.deploy(name, sources.parse(source), config.limits, force=True)
    return web.json_response(
        {"path": body["path"], "language": body["language"], "version": int(function.current.created)}
    )


async def post_run_now(request: web.Request) -> web.StreamResponse:
    """go-faas's ``POST /run-now``: the script run once; ``{"data", "type"}``, or 500 ``{"error"}``;
    with ``"stream": true``, Server-Sent Events as a function streams them (its printed lines and
    yielded items, then ``event: result`` with the return value, or ``event: error``)."""
    query_params(request)
    config = request.app[CONFIG]
    body = await read_json(request, MAX_SOURCE_BODY_FACTOR * config.max_source_bytes + 65536)
    body, event, streams = compat.run_now_request(body)
    sources = request.app[SOURCES]
    source = sources.parse(body)
    if streams:
        return await run_streamed(request, source, event, config.limits, compat.stream_end)
    answer = await sources.run(source, event, config.limits)
    if "error" in answer:
        return web.json_response(compat.failure(answer), status=500)
    return web.json_response(compat.run_answer(answer["result"]))


ROUTES = [
    web.post("/upload", post_upload),
    web.post("/run-now", post_run_now),
]
