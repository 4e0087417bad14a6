"""The control API's routes for functions from source: deploys, runtimes, run-once and jobs.

    POST   /v1/functions/{name}/source[?memory=M...]   body {"runtime", "files", "entry", "handler"}
    POST   /v1/run[?memory=M...]                  body {"runtime", "files", "entry", "handler", "input"}
                                                -> {"result", "stdout", "stderr", "exit_code", "duration_ms"}
    POST   /v1/jobs                               body {"FnName", "DockerFile", "TarFile", "Stdin", "Timeout"}
                                                -> {"stdout", "stderr", "exit_code", "timed_out", "duration_ms"}
    POST   /v1/runtimes/{name}[?language=L&tag=T]      body: the image tarball (streamed)
    GET    /v1/runtimes
    DELETE /v1/runtimes/{name}                    refused while a function's kept version uses it

Running code is a deploy-class right: these routes sit on the control API only, never on the gateway.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

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
from faasd.functions import SameImage
from faasd.limits import PARAMETERS as LIMIT_PARAMETERS
from faasd.source.jobs import MAX_STDIN_BYTES, MAX_TAR_BYTES, parse_job
from faasd.source.runtimes import source_fields

MAX_SOURCE_BODY_FACTOR = 2  # JSON escapes may double the source's bytes on the wire
MAX_JOB_BODY = 2 * MAX_TAR_BYTES + MAX_STDIN_BYTES  # base64 takes 4/3, JSON escapes more of Stdin


async def post_source_function(request: web.Request) -> web.Response:
    """Deploy the function's code, checked in a container of its runtime, as its next version."""
    name = function_name(request)
    params = query_params(request, frozenset({*LIMIT_PARAMETERS, "force"}))
    config = request.app[CONFIG]
    limits = config.limits.with_overrides(params)
    force = flag_param(params, "force")
    body = await read_json(request, MAX_SOURCE_BODY_FACTOR * config.max_source_bytes + 65536)
    sources = request.app[SOURCES]
    try:
        function = await sources.deploy(name, sources.parse(body), limits, force)
    except SameImage as same:
        return web.json_response(function_json(same.function) | {"same_as": same.function.current.number})
    return web.json_response(function_json(function), status=201)


async def post_run(request: web.Request) -> web.Response:
    """Run code once, without deploying it, in a throw-away container of its runtime."""
    params = query_params(request, frozenset(LIMIT_PARAMETERS))
    config = request.app[CONFIG]
    limits = config.limits.with_overrides(params)
    body = await read_json(request, MAX_SOURCE_BODY_FACTOR * config.max_source_bytes + 65536)
    event = body.pop("input", None) if isinstance(body, dict) else None
    sources = request.app[SOURCES]
    return web.json_response(await sources.run(sources.parse(body), event, limits))


async def post_job(request: web.Request) -> web.Response:
    """A Functron job: files, a command, stdin and a timeout, run once on a runtime."""
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
