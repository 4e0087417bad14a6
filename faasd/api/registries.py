"""The control API's routes that speak to image registries: pulls as a function's next version, and
the logins faasd keeps for them.

    POST   /v1/functions/{name}/pull              body {"reference", "limits", "environment", "credentials",
                                                "dry_run", "force", "check"} -> progress as JSON lines, the outcome last
    GET    /v1/registries                         the registries faasd holds a login for
    PUT    /v1/registries/{registry}/login        body {"username", "password"}: checked, then kept
    DELETE /v1/registries/{registry}/login
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import hdrs, web

from faasd import metrics
from faasd.api.common import (
    CONFIG,
    FUNCTIONS,
    LAYERS,
    LOGINS,
    function_json,
    function_name,
    query_params,
    read_json,
    shown,
)
from faasd.config import Config
from faasd.environment import check_environment, with_environment
from faasd.errors import FaasError, InvalidRequest, NotFound
from faasd.functions import SameImage
from faasd.images.distribution import DistributionClient
from faasd.images.logins import Credentials
from faasd.images.pull import Pull, registry_session
from faasd.images.reference import Reference
from faasd.limits import PARAMETERS as LIMIT_PARAMETERS
from faasd.limits import Limits

log = logging.getLogger(__name__)

PULL_FIELDS = frozenset({"reference", "limits", "environment", "credentials", "dry_run", "force", "check"})
MAX_JSON_BODY = 256 << 10


async def json_body(request: web.Request, fields: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object, bounded, with no field the route does not know."""
    if request.content_length is None or request.content_length > MAX_JSON_BODY:
        raise InvalidRequest(f"send a JSON object of at most {MAX_JSON_BODY} bytes, with its length")
    body = await read_json(request, MAX_JSON_BODY)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidRequest(f"unknown field {shown(unknown[0])}: {request.path} takes {', '.join(sorted(fields))}")
    return body


def limits_field(config: Config, value: object) -> Limits:
    """A pull's ``limits``: the same names and values as the deploy's query parameters."""
    if value is None:
        return config.limits
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidRequest('limits must be an object of NAME: value strings, e.g. {"memory": "128m"}')
    unknown = sorted(set(value) - set(LIMIT_PARAMETERS))
    if unknown:
        raise InvalidRequest(f"unknown limit {shown(unknown[0])}: the limits are {', '.join(LIMIT_PARAMETERS)}")
    return config.limits.with_overrides(value)


async def post_pull(request: web.Request) -> web.StreamResponse:
    """Pull an image from its registry as the next version of ``name``, and stream the progress.

    Everything up to the manifest and config (the reference, the credentials, the platform) is
    answered with its own status; from the first layer on, the answer is 200 and JSON lines, the
    last of which says how it ended (``deployed``, ``unchanged``, ``planned`` or ``error``).
    """
    name = function_name(request)
    query_params(request)
    config = request.app[CONFIG]
    body = await json_body(request, PULL_FIELDS)
    if not isinstance(body.get("reference"), str):
        raise InvalidRequest("the body names the image to pull in 'reference', e.g. 127.0.0.1:5000/team/app:1")
    reference = Reference.parse(body["reference"])
    limits = limits_field(config, body.get("limits"))
    environment = check_environment(body.get("environment") or {}, "environment")
    dry_run, force, check = (body.get(field, False) for field in ("dry_run", "force", "check"))
    if not all(isinstance(flag, bool) for flag in (dry_run, force, check)):
        raise InvalidRequest("dry_run, force and check are true or false")
    credentials = None
    if body.get("credentials") is not None:
        credentials = Credentials.from_json(body["credentials"], "credentials")
    else:
        credentials = await asyncio.to_thread(request.app[LOGINS].get, reference.registry)
    functions = request.app[FUNCTIONS]
    async with registry_session(config.registry_timeout_seconds) as session:
        client = DistributionClient(session, reference, credentials, reference.registry in config.insecure_registries)
        pull = Pull(client, reference, request.app[LAYERS].holds)
        await pull.resolve()
        image = str(reference)
        same = None
        if not force:
            same = functions.same_image(
                name, pull.config_digest, with_environment(pull.image_config, environment), limits
            )
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/x-ndjson"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        await send(
            {
                "event": "resolved",
                "reference": image,
                "digest": pull.resolved_digest,
                "image_id": pull.config_digest,
                "changed": same is None,
                "layers": [layer.to_json() for layer in pull.layers],
            }
        )
        try:
            if dry_run:
                await send({"event": "planned", "changed": same is None})
            elif same is not None:
                await send({"event": "unchanged", "changed": False, "function": function_json(same)})
            else:
                started = time.monotonic()
                archive = await pull.fetch(config.uploads_dir, config.max_upload_bytes, send)
                log.info(
                    "image pulled function=%s reference=%s digest=%s fetched_bytes=%d layers_held=%d seconds=%.3f",
                    name,
                    image,
                    pull.resolved_digest,
                    pull.missing_bytes,
                    sum(layer.held for layer in pull.layers),
                    time.monotonic() - started,
                )
                try:
                    function = await functions.deploy(
                        name, archive, image, None, limits, force, environment, pull.resolved_digest, check
                    )
                finally:
                    archive.unlink(missing_ok=True)
                await send({"event": "deployed", "changed": True, "function": function_json(function)})
        except SameImage as unchanged:  # pushed again, meanwhile, as it was
            await send({"event": "unchanged", "changed": False, "function": function_json(unchanged.function)})
        except FaasError as exc:
            metrics.ERRORS.labels(type(exc).__name__).inc()
            log.warning("pull failed function=%s reference=%s error=%s", name, image, exc.message)
            await send({"event": "error", "status": exc.status, "error": exc.message})
    await response.write_eof()
    return response


def registry_param(request: web.Request) -> str:
    """The ``{registry}`` of the route: host[:port], as an image reference names it."""
    registry = request.match_info["registry"]
    parsed = Reference.parse(f"{registry}/login-check")
    if parsed.registry != registry:
        raise InvalidRequest(f"{shown(registry)} is not a registry: give HOST:PORT, e.g. 127.0.0.1:5000")
    return registry


async def put_login(request: web.Request) -> web.Response:
    """Check the credentials against the registry (as docker login does), then keep them."""
    registry = registry_param(request)
    query_params(request)
    config = request.app[CONFIG]
    credentials = Credentials.from_json(await json_body(request, frozenset({"username", "password"})), "the body")
    reference = Reference.parse(f"{registry}/login-check")
    async with registry_session(config.registry_timeout_seconds) as session:
        client = DistributionClient(session, reference, credentials, registry in config.insecure_registries)
        await client.check_login()
    await asyncio.to_thread(request.app[LOGINS].put, registry, credentials)
    log.info("registry login registry=%s username=%s", registry, credentials.username)
    return web.json_response({"registry": registry, "username": credentials.username})


async def delete_login(request: web.Request) -> web.Response:
    registry = registry_param(request)
    query_params(request)
    if not await asyncio.to_thread(request.app[LOGINS].remove, registry):
        raise NotFound(f"faasd holds no login for {registry}")
    log.info("registry logout registry=%s", registry)
    return web.json_response({"registry": registry})


async def list_logins(request: web.Request) -> web.Response:
    query_params(request)
    return web.json_response({"registries": await asyncio.to_thread(request.app[LOGINS].registries)})


ROUTES = [
    web.post("/v1/functions/{name}/pull", post_pull),
    web.get("/v1/registries", list_logins),
    web.put("/v1/registries/{registry}/login", put_login),
    web.delete("/v1/registries/{registry}/login", delete_login),
]
