"""The control API's routes for functions from source: deploys, runtimes, run-once and jobs.

    POST   /v1/functions/{name}/source[?memory=M...&force=1&check=1]   body {"runtime", "files", "entry", "handler"}
    POST   /v1/run[?memory=M...]                  body {"runtime", "files", "entry", "handler", "input", "stream"}
                                                -> {"result", "stdout", "stderr", "exit_code", "duration_ms"};
                                                with "stream": true, Server-Sent Events, that answer last
    POST   /v1/jobs                               body {"FnName", "DockerFile", "TarFile", "Stdin", "Timeout"},
                                                FROM a runtime or function:NAME
                                                -> {"stdout", "stderr", "exit_code", "timed_out", "duration_ms"}
    POST   /v1/runtimes/{name}[?language=L&tag=T]      body: the image tarball (streamed)
    GET    /v1/runtimes
    DELETE /v1/runtimes/{name}                    refused while a function's kept version uses it

Running code is a deploy-class right: these routes sit on the control API only, never on the gateway.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web

from faasd.api.common import (
    CONFIG,
    FUNCTIONS,
    RUNTIMES,
    SOURCES,
    flag_param,
    function_json,
    function_name,
    query_params,
    read_json,
    receive_upload,
    reference_param,
)
from faasd.errors import FaasError, InvalidRequest
from faasd.functions import SameImage
from faasd.limits import PARAMETERS as LIMIT_PARAMETERS
from faasd.limits import Limits
from faasd.source.functions import Source
from faasd.source.jobs import MAX_STDIN_BYTES, MAX_TAR_BYTES, parse_job
from faasd.source.runtimes import source_fields

MAX_SOURCE_BODY_FACTOR = 2  # JSON escapes may double the source's bytes on the wire
MAX_JOB_BODY = 2 * MAX_TAR_BYTES + MAX_STDIN_BYTES  # base64 takes 4/3, JSON escapes more of Stdin


async def post_source_function(request: web.Request) -> web.Response:
    """Deploy the function's code, checked in a container of its runtime, as its next version."""
    name = function_name(request)
    params = query_params(request, frozenset({*LIMIT_PARAMETERS, "force", "check"}))
    config = request.app[CONFIG]
    limits = config.limits.with_overrides(params)
    force, check = flag_param(params, "force"), flag_param(params, "check")
    body = await read_json(request, MAX_SOURCE_BODY_FACTOR * config.max_source_bytes + 65536)
    sources = request.app[SOURCES]
    try:
        function = await sources.deploy(name, sources.parse(body), limits, force, check)
    except SameImage as same:
        return web.json_response(function_json(same.function) | {"same_as": same.function.current.number})
    return web.json_response(function_json(function), status=201)


async def post_run(request: web.Request) -> web.StreamResponse:
    """Run code once, without deploying it, in a throw-away container of its runtime; with
    ``"stream": true``, as Server-Sent Events whose last (``result``, or ``error`` when the code
    failed) is the answer."""
    params = query_params(request, frozenset(LIMIT_PARAMETERS))
    config = request.app[CONFIG]
    limits = config.limits.with_overrides(params)
    body = await read_json(request, MAX_SOURCE_BODY_FACTOR * config.max_source_bytes + 65536)
    event = body.pop("input", None) if isinstance(body, dict) else None
    streams = body.pop("stream", False) if isinstance(body, dict) else False
    if not isinstance(streams, bool):
        raise InvalidRequest("'stream' is true or false")
    sources = request.app[SOURCES]
    source = sources.parse(body)
    if streams:
        return await run_streamed(request, source, event, limits, lambda answer: (outcome(answer), answer))
    return web.json_response(await sources.run(source, event, limits))


def outcome(answer: dict[str, Any]) -> str:
    """The name of a streamed run's last event: ``error`` when the code failed, else ``result``."""
    return "error" if "error" in answer else "result"


def sse(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event (WHATWG HTML, "Server-sent events"): text as it is, anything else as
    JSON, each of its lines a ``data:`` field of its own."""
    text = data if isinstance(data, str) else json.dumps(data)
    fields = [f"event: {event}"] if event else []
    fields += [f"data: {line}" for line in re.split(r"\r\n|\r|\n", text)]
    return ("\n".join(fields) + "\n\n").encode()


async def run_streamed(
    request: web.Request,
    source: Source,
    event: Any,
    limits: Limits,
    last: Callable[[dict[str, Any]], tuple[str, Any]],
) -> web.StreamResponse:
    """Run ``source`` once as Server-Sent Events: each item it yields and line it prints, sent the
    moment it comes, then the event ``last`` makes of the run's answer.

    The response starts with the first event, so a refusal before the code runs (an unknown
    runtime, a failed install) still gets its own status."""
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-store"})

    async def send(data: bytes) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(data)

    try:
        answer = await request.app[SOURCES].run(source, event, limits, lambda data: send(sse(data)))
        name, data = last(answer)
        await send(sse(data, name))
    except ConnectionResetError:  # the client left: the run's container was ended with it
        return response
    except FaasError as exc:
        if not response.prepared:
            raise
        await response.write(sse({"error": exc.message}, "error"))
    await response.write_eof()
    return response


async def post_job(request: web.Request) -> web.Response:
    """A Functron job: files, a command, stdin and a timeout, run once on a runtime or a function's image."""
    query_params(request)
    body = await read_json(request, MAX_JOB_BODY)
    job = await asyncio.to_thread(parse_job, body)  # decodes up to 64 MiB of base64: not on the loop
    return web.json_response(await request.app[SOURCES].run_job(job))


async def post_runtime(request: web.Request) -> web.Response:
    """Import the body's image as runtime ``name``, with faasd's wrapper for its language."""
    name = function_name(request)
    params = query_params(request, frozenset({"language", "tag"}))
    tag = reference_param(params, "tag")
    upload = await receive_upload(request, name)
    try:
        runtime = await request.app[RUNTIMES].add(name, params.get("language"), upload, tag)
    finally:
        upload.unlink(missing_ok=True)
    return web.json_response(runtime.to_json(), status=201)


async def list_runtimes(request: web.Request) -> web.Response:
    query_params(request)
    runtimes = await asyncio.to_thread(request.app[RUNTIMES].all)
    return web.json_response({"runtimes": [runtime.to_json() for runtime in runtimes]})


async def delete_runtime(request: web.Request) -> web.Response:
    name = function_name(request)
    query_params(request)
    functions = request.app[FUNCTIONS]

    def users(runtime: str) -> list[str]:
        return [
            function.name
            for function in functions.all()
            if any(source_fields(v.config).get("runtime") == runtime for v in functions.versions(function.name))
        ]

    runtime = await request.app[RUNTIMES].remove(name, users)
    return web.json_response({"removed": runtime.name})


ROUTES = [
    web.post("/v1/functions/{name}/source", post_source_function),
    web.post("/v1/run", post_run),
    web.post("/v1/jobs", post_job),
    web.post("/v1/runtimes/{name}", post_runtime),
    web.get("/v1/runtimes", list_runtimes),
    web.delete("/v1/runtimes/{name}", delete_runtime),
]
