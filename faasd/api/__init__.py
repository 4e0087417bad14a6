"""The control API: aiohttp on a unix socket (and optionally TCP). The only place errors become HTTP statuses.

    POST   /v1/functions/{name}[?tag=T&image=I&force=1&memory=M&cpus=C&pids=P&timeout=S&tmp_size=M]
                                                body: the image tarball (streamed); 201, or 200 with
                                                "same_as": N when version N, current, has that image
    GET    /v1/functions
    GET    /v1/functions/{name}                   the function, its kept versions, requests served
    DELETE /v1/functions/{name}
    GET    /v1/functions/{name}/versions
    POST   /v1/functions/{name}/rollback[?version=N]
    PUT    /v1/functions/{name}/versions/{version}/address   idempotent: the version's own address
    GET    /v1/functions/{name}/logs[?tail=N&since=S&follow=1]   -> text lines, chunked
    POST   /v1/functions/{name}/pull              body {"reference", "limits", "environment", "credentials",
                                                "dry_run", "force", "check"} -> progress as JSON lines, the outcome last
    POST   /v1/layers/lookup                      body {"diff_ids": [...]} -> {"held": [...]}: read-only
    GET    /v1/registries                         the registries faasd holds a login for
    PUT    /v1/registries/{registry}/login        body {"username", "password"}: checked, then kept
    DELETE /v1/registries/{registry}/login
    GET    /healthz
    GET    /metrics                               Prometheus exposition

the original wire API, kept for existing clients:

    POST /api/new        header X-Image-Name: the function's name; body: the tarball -> the IP
    GET  /api/ip/{name}  -> the IP, as text
    GET  /api/list       -> [{"name", "ip"}]

and, in modules of their own, the routes of functions from source, runtimes, run-once and jobs
(``faasd.api.source``) and go-faas's control routes (``faasd.api.compatible``). What they share
(the app's state, checked parameters, bounded bodies) is ``faasd.api.common``.

Every input is checked here before anything is read or changed: names, query parameters
(unknown or repeated ones are refused, so a typo fails loudly), headers, the declared body
size. On the TCP listener a bearer token is checked first of all (see ``faasd.auth``), or the
session cookie of the web page the TCP listener also serves (see ``faasd.web``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import grp
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from faasd import metrics
from faasd.api import compatible, source
from faasd.api.common import (
    CONFIG,
    FUNCTIONS,
    LAYERS,
    LOGINS,
    LOGS,
    RUNTIMES,
    SOURCES,
    flag_param,
    function_json,
    function_name,
    query_params,
    read_json,
    receive_upload,
    reference_param,
    shown,
)
from faasd.auth import bearer_token, exposure_warning, token_matches
from faasd.config import Config
from faasd.daemonlog import Throttle, clipped
from faasd.environment import check_environment, with_environment
from faasd.errors import (
    FaasError,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from faasd.functions import Functions, SameImage
from faasd.images.archive import DIGEST
from faasd.images.distribution import DistributionClient
from faasd.images.layers import LayerStore
from faasd.images.logins import Credentials, Logins
from faasd.images.pull import Pull, registry_session
from faasd.images.reference import Reference
from faasd.limits import PARAMETERS as LIMIT_PARAMETERS
from faasd.limits import Limits
from faasd.logs import Logs, parse_query, read_log
from faasd.registry import Function, Version, validate_name
from faasd.source.functions import SourceFunctions
from faasd.source.runtimes import source_fields
from faasd.web import routes, session

log = logging.getLogger(__name__)

# A lookup names the layers of one image: Docker caps an image at 127, overlayfs at about 500.
MAX_LOOKUP_DIFF_IDS = 1000
MAX_LOOKUP_BYTES = 128 << 10
SOCKET_MODE = 0o660
# Members of this group may use the unix socket without sudo, like docker's "docker" group.
SOCKET_GROUP = "faas"
DEPLOY_PARAMS = frozenset({"tag", "image", "force", "check", "env", *LIMIT_PARAMETERS})
PULL_FIELDS = frozenset({"reference", "limits", "environment", "credentials", "dry_run", "force", "check"})
MAX_JSON_BODY = 256 << 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"error": message}`` with the status its class declares."""
    try:
        return await handler(request)
    except FaasError as exc:
        metrics.ERRORS.labels(type(exc).__name__).inc()
        # RFC 6750 section 3: a 401 names the scheme the client should use.
        headers = {hdrs.WWW_AUTHENTICATE: 'Bearer realm="faasd"'} if isinstance(exc, Unauthorized) else None
        return web.json_response({"error": exc.message}, status=exc.status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)
    except Exception:
        log.exception("api error method=%s path=%s", clipped(request.method), clipped(request.path))
        return web.json_response({"error": "internal error: see the faasd log"}, status=500)


def require_token(token: str) -> Middleware:
    """Middleware of the TCP listener: no handler runs, no body is read, without the token."""
    refusals = Throttle(log)  # anyone who reaches the port causes these lines

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if session.is_public(request) or session.has_session(request, token):
            return await handler(request)  # the web page's, and requests it makes (faasd.web)
        values = request.headers.getall(hdrs.AUTHORIZATION, [])
        presented = bearer_token(values[0]) if len(values) == 1 else None
        if presented is not None and token_matches(token, presented):
            return await handler(request)
        reason = "missing_token" if presented is None else "wrong_token"
        refusals.log(
            logging.WARNING, "api refused reason=%s peer=%s method=%s", reason, request.remote, clipped(request.method)
        )
        if presented is None:
            raise Unauthorized(
                "this address needs a token: send 'Authorization: Bearer TOKEN' (faas --token or FAAS_TOKEN); "
                "faasd keeps it in api.token in its state dir"
            )
        raise Unauthorized("the token does not match the one in api.token in faasd's state dir")

    return check_token


def version_number(text: str, what: str) -> int:
    """A version number from the path or query, refused with a 400 unless it is one."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(text) > 18:
        raise InvalidRequest(f"{what} {shown(text)} is not a version number: give one from 'faas versions NAME'")
    return int(text)


def single_header(request: web.Request, name: str) -> str | None:
    """The value of a header that must appear at most once."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"the {name} header is given {len(values)} times: give it once")
    return values[0] if values else None


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


async def get_metrics(request: web.Request) -> web.Response:
    query_params(request)
    metrics.sample()
    body = await asyncio.to_thread(prometheus_client.generate_latest)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: prometheus_client.CONTENT_TYPE_LATEST})


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
    query_params(request)
    return web.json_response({"status": "ok", "functions": len(request.app[FUNCTIONS].all())})


async def legacy_new(request: web.Request) -> web.Response:
    name = single_header(request, "X-Image-Name")
    if not name:
        raise InvalidRequest("the X-Image-Name header is missing: it names the function")
    try:
        function = await deploy(request, validate_name(name), query_params(request))
    except SameImage as same:
        return web.Response(text=f"{same.function.ip}\n")
    return web.Response(text=f"{function.ip}\n", status=201)


async def legacy_ip(request: web.Request) -> web.Response:
    name = function_name(request)
    query_params(request)
    return web.Response(text=f"{request.app[FUNCTIONS].get(name).ip}\n")


async def legacy_list(request: web.Request) -> web.Response:
    query_params(request)
    return web.json_response([{"name": f.name, "ip": str(f.ip)} for f in request.app[FUNCTIONS].all()])


def make_app(
    config: Config,
    functions: Functions,
    logs: Logs,
    layers: LayerStore,
    token: str | None = None,
    sources: SourceFunctions | None = None,
) -> web.Application:
    """The API; with ``token``, every request must carry it (the TCP listener's app); with
    ``sources``, functions from source and runtimes too."""
    middlewares: list[Middleware] = [errors_as_json] if token is None else [errors_as_json, require_token(token)]
    app = web.Application(middlewares=middlewares)
    app[CONFIG] = config
    app[FUNCTIONS] = functions
    app[LOGS] = logs
    app[LAYERS] = layers
    app[LOGINS] = Logins(config.logins_path)
    app.on_shutdown.append(end_follows)
    if token is not None:
        routes.attach(app, token, functions, config.port)
    app.add_routes(
        [
            web.post("/v1/functions/{name}", post_function),
            web.get("/v1/functions", list_functions),
            web.get("/v1/functions/{name}", get_function),
            web.delete("/v1/functions/{name}", delete_function),
            web.get("/v1/functions/{name}/logs", get_logs),
            web.get("/v1/functions/{name}/versions", get_versions),
            web.post("/v1/functions/{name}/rollback", post_rollback),
            web.put("/v1/functions/{name}/versions/{version}/address", put_version_address),
            web.post("/v1/functions/{name}/pull", post_pull),
            web.post("/v1/layers/lookup", lookup_layers),
            web.get("/v1/registries", list_logins),
            web.put("/v1/registries/{registry}/login", put_login),
            web.delete("/v1/registries/{registry}/login", delete_login),
            web.get("/healthz", healthz),
            web.get("/metrics", get_metrics),
            web.post("/api/new", legacy_new),
            web.get("/api/ip/{name}", legacy_ip),
            web.get("/api/list", legacy_list),
        ]
    )
    if sources is not None:  # the daemon always gives them; a test of other routes may not
        app[SOURCES] = sources
        app[RUNTIMES] = sources.runtimes
    app.add_routes(source.ROUTES)
    app.add_routes(compatible.ROUTES)
    return app


def socket_gid(group: str = SOCKET_GROUP) -> int:
    """The gid the control socket gets: ``group``'s when it exists, else root's."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return 0


def bind_unix_socket(path: Path, gid: int) -> socket.socket:
    """A socket bound at ``path`` with mode 0660 and group ``gid``.

    It is bound under a temp name and renamed into place once its mode is set, so it never
    shows at ``path`` with the looser mode the umask gives, not even for a moment.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temp))
        os.chown(temp, -1, gid)
        os.chmod(temp, SOCKET_MODE)
        os.replace(temp, path)
    except BaseException:
        sock.close()
        temp.unlink(missing_ok=True)
        raise
    return sock


@contextlib.asynccontextmanager
async def running(app: web.Application, make_site: Callable[[web.AppRunner], web.BaseSite]) -> AsyncIterator[None]:
    """Serve ``app`` on the site ``make_site`` builds, for the duration of the ``async with``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await make_site(runner).start()
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_api(
    config: Config,
    functions: Functions,
    logs: Logs,
    layers: LayerStore,
    token: str | None,
    sources: SourceFunctions | None = None,
) -> AsyncIterator[None]:
    """Serve the API on the unix socket, and on TCP with ``token`` when ``config.listen`` is set.

    Two apps, not one app that asks each request where it came from: the TCP app cannot
    be reached without its token middleware, whatever the transport reports.
    """
    if config.listen is not None and token is None:
        raise ValueError("the TCP listener is never served without a token")
    gid = socket_gid()
    sock = bind_unix_socket(config.socket_path, gid)
    try:
        async with contextlib.AsyncExitStack() as stack:
            unix_site = functools.partial(web.SockSite, sock=sock)
            await stack.enter_async_context(
                running(make_app(config, functions, logs, layers, None, sources), unix_site)
            )
            log.info("api listening socket=%s mode=%04o gid=%d", config.socket_path, SOCKET_MODE, gid)
            if (address := config.listen) is not None:
                tcp_site = functools.partial(web.TCPSite, host=str(address.host), port=address.port)
                await stack.enter_async_context(
                    running(make_app(config, functions, logs, layers, token, sources), tcp_site)
                )
                log.info("api listening tcp=%s token_file=%s", address, config.token_path)
                if warning := exposure_warning(address):
                    log.warning("%s", warning)
            yield
    finally:
        sock.close()
        config.socket_path.unlink(missing_ok=True)
