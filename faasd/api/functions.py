"""The control API's routes for functions deployed from an image: deploys of an uploaded archive,
the functions and their versions, rollback, version addresses, logs and the layer lookup.

    POST   /v1/functions/{name}[?tag=T&image=I&force=1&check=1&env=E&memory=M&cpus=C&pids=P&timeout=S&tmp_size=M]
                                                body: the image tarball (streamed); 201, or 200 with
                                                "same_as": N when version N, current, has that image
    GET    /v1/functions
    GET    /v1/functions/{name}                   the function, its kept versions, requests served
    DELETE /v1/functions/{name}
    GET    /v1/functions/{name}/versions
    POST   /v1/functions/{name}/rollback[?version=N]
    PUT    /v1/functions/{name}/versions/{version}/address   idempotent: the version's own address
    GET    /v1/functions/{name}/logs[?tail=N&since=S&follow=1]   -> text lines, chunked
    POST   /v1/layers/lookup                      body {"diff_ids": [...]} -> {"held": [...]}: read-only
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from faasd import metrics
from faasd.api.common import (
    CONFIG,
    FUNCTIONS,
    LAYERS,
    LOGS,
    flag_param,
    function_json,
    function_name,
    query_params,
    receive_upload,
    reference_param,
    shown,
)
from faasd.config import Config
from faasd.environment import check_environment
from faasd.errors import InvalidRequest
from faasd.functions import SameImage
from faasd.images.archive import DIGEST
from faasd.limits import PARAMETERS as LIMIT_PARAMETERS
from faasd.logs import parse_query, read_log
from faasd.registry import Function, Version
from faasd.source.runtimes import source_fields

# A lookup names the layers of one image: Docker caps an image at 127, overlayfs at about 500.
MAX_LOOKUP_DIFF_IDS = 1000
MAX_LOOKUP_BYTES = 128 << 10
DEPLOY_PARAMS = frozenset({"tag", "image", "force", "check", "env", *LIMIT_PARAMETERS})


def gateway_json(config: Config, name: str) -> dict[str, str] | None:
    """Where the gateway reaches ``name``, when one runs: the URL, and the address to send
    ``Host: NAME`` to (a ``NAME.localhost`` URL reaches only a gateway on loopback's 127.0.0.1)."""
    if config.gateway is None:
        return None
    host = f"{name}.{config.gateway_domain}" if config.gateway_domain else name
    port = "" if config.gateway.port == 80 else f":{config.gateway.port}"
    return {"url": f"http://{host}{port}/", "host": host, "address": str(config.gateway)}


def version_json(version: Version, current: int) -> dict[str, Any]:
    return {
        "version": version.number,
        "current": version.number == current,
        "image": version.image,
        "digest": version.digest,
        "pulled": version.pulled,
        "entrypoint": list(version.config.entrypoint),
        "cmd": list(version.config.cmd),
        "limits": dataclasses.asdict(version.limits),
        "created": version.created,
        "ip": None if version.ip is None else str(version.ip),
        **source_fields(version.config),
    }


def versions_json(function: Function, versions: list[Version]) -> dict[str, Any]:
    return {
        "name": function.name,
        "current": function.current.number,
        "versions": [version_json(v, function.current.number) for v in versions],
    }


def version_number(text: str, what: str) -> int:
    """A version number from the path or query, refused with a 400 unless it is one."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(text) > 18:
        raise InvalidRequest(f"{what} {shown(text)} is not a version number: give one from 'faas versions NAME'")
    return int(text)


def environment_param(params: dict[str, str]) -> dict[str, str]:
    """The ``env`` query parameter: a JSON object of NAME: value strings."""
    if "env" not in params:
        return {}
    try:
        value = json.loads(params["env"])
    except ValueError as exc:
        raise InvalidRequest(f"the query parameter env is not JSON: {exc}") from exc
    return check_environment(value, "the query parameter env")


async def deploy(request: web.Request, name: str, params: dict[str, str]) -> Function:
    """Import the request body as the next version of ``name`` (already checked by the caller);
    ``SameImage`` when it is the current version's image (unless ``force``); with ``check``,
    ``CheckFailed`` when its handler never gets ready."""
    tag = reference_param(params, "tag")
    image = reference_param(params, "image") or tag or name
    limits = request.app[CONFIG].limits.with_overrides(params)
    force, check = flag_param(params, "force"), flag_param(params, "check")
    environment = environment_param(params)
    upload = await receive_upload(request, name)
    try:
        return await request.app[FUNCTIONS].deploy(
            name, upload, image=image, tag=tag, limits=limits, force=force, environment=environment, check=check
        )
    finally:
        upload.unlink(missing_ok=True)


async def post_function(request: web.Request) -> web.Response:
    """201 with the new version; 200 with ``same_as`` when the image is the current one's."""
    name = function_name(request)
    try:
        function = await deploy(request, name, query_params(request, DEPLOY_PARAMS))
    except SameImage as same:
        return web.json_response(function_json(same.function) | {"same_as": same.function.current.number})
    return web.json_response(function_json(function), status=201)


async def lookup_layers(request: web.Request) -> web.Response:
    """Which of the layers named (by diff_id) the store holds: what faas may leave out of an upload.

    Read-only, and no promise: a layer may be freed before the upload that leaves it out arrives,
    and that import is then refused (409) with what to do.
    """
    query_params(request)
    if request.content_length is None or request.content_length > MAX_LOOKUP_BYTES:
        raise InvalidRequest(f"send the diff_ids as a JSON body of at most {MAX_LOOKUP_BYTES} bytes, with its length")
    try:
        body = await request.json()
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from exc
    diff_ids = body.get("diff_ids") if isinstance(body, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) > MAX_LOOKUP_DIFF_IDS:
        raise InvalidRequest(f'send {{"diff_ids": [...]}} with at most {MAX_LOOKUP_DIFF_IDS} diff_ids')
    for diff_id in diff_ids:
        if not isinstance(diff_id, str) or not DIGEST.fullmatch(diff_id):
            raise InvalidRequest(f"{shown(str(diff_id))} is not a diff_id: sha256:<64 hex digits> expected")
    layers = request.app[LAYERS]
    held = await asyncio.to_thread(lambda: [diff_id for diff_id in diff_ids if layers.holds(diff_id)])
    return web.json_response({"held": held})


async def list_functions(request: web.Request) -> web.Response:
    query_params(request)
    return web.json_response({"functions": [function_json(f) for f in request.app[FUNCTIONS].all()]})


async def get_function(request: web.Request) -> web.Response:
    """The function as listed, with its kept versions and the connections it served, by status."""
    name = function_name(request)
    query_params(request)
    functions = request.app[FUNCTIONS]
    function = functions.get(name)
    described = function_json(function) | versions_json(function, functions.versions(name))
    described["requests"] = metrics.requests_by_status(name)
    described["gateway"] = gateway_json(request.app[CONFIG], name)
    return web.json_response(described)


async def get_versions(request: web.Request) -> web.Response:
    name = function_name(request)
    query_params(request)
    functions = request.app[FUNCTIONS]
    return web.json_response(versions_json(functions.get(name), functions.versions(name)))


async def post_rollback(request: web.Request) -> web.Response:
    name = function_name(request)
    params = query_params(request, frozenset({"version"}))
    number = version_number(params["version"], "the query parameter version") if "version" in params else None
    function = await request.app[FUNCTIONS].rollback(name, number)
    return web.json_response(function_json(function))


async def put_version_address(request: web.Request) -> web.Response:
    name = function_name(request)
    number = version_number(request.match_info["version"], "the path segment")
    query_params(request)
    functions = request.app[FUNCTIONS]
    version = await functions.version_address(name, number)
    return web.json_response(version_json(version, functions.get(name).current.number))


async def delete_function(request: web.Request) -> web.Response:
    name = function_name(request)
    query_params(request)
    function = await request.app[FUNCTIONS].remove(name)
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


ROUTES = [
    web.post("/v1/functions/{name}", post_function),
    web.get("/v1/functions", list_functions),
    web.get("/v1/functions/{name}", get_function),
    web.delete("/v1/functions/{name}", delete_function),
    web.get("/v1/functions/{name}/logs", get_logs),
    web.get("/v1/functions/{name}/versions", get_versions),
    web.post("/v1/functions/{name}/rollback", post_rollback),
    web.put("/v1/functions/{name}/versions/{version}/address", put_version_address),
    web.post("/v1/layers/lookup", lookup_layers),
]
