"""The control API: aiohttp on a unix socket (and optionally TCP). The only place errors become HTTP statuses.

This module assembles the app and serves it; the routes live in modules of their own:
``faasd.api.functions`` (functions deployed from an image: deploys, versions, rollback, logs),
``faasd.api.registries`` (pulls and registry logins), ``faasd.api.source`` (functions from
source, runtimes, run-once and jobs), ``faasd.api.compatible`` (go-faas's control routes) and
``faasd.api.legacy`` (the original wire API). What they share (the app's state, checked
parameters, bounded bodies) is ``faasd.api.common``. Its own routes:

    GET    /healthz
    GET    /metrics                               Prometheus exposition

Every input is checked before anything is read or changed: names, query parameters
(unknown or repeated ones are refused, so a typo fails loudly), headers, the declared body
size. On the TCP listener a bearer token is checked first of all (see ``faasd.auth``), or the
session cookie of the web page the TCP listener also serves (see ``faasd.web``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import prometheus_client
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from faasd import metrics
from faasd.api import compatible, legacy, registries, source
from faasd.api import functions as image_functions
from faasd.api.common import CONFIG, FUNCTIONS, LAYERS, LOGINS, LOGS, RUNTIMES, SOURCES, query_params
from faasd.auth import bearer_token, exposure_warning, token_matches
from faasd.config import Config
from faasd.daemonlog import Throttle, clipped
from faasd.errors import FaasError, Unauthorized
from faasd.functions import Functions
from faasd.images.layers import LayerStore
from faasd.images.logins import Logins
from faasd.logs import Logs
from faasd.source.functions import SourceFunctions
from faasd.web import routes, session

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
# Members of this group may use the unix socket without sudo, like docker's "docker" group.
SOCKET_GROUP = "faas"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


async def get_metrics(request: web.Request) -> web.Response:
    query_params(request)
    metrics.sample()
    body = await asyncio.to_thread(prometheus_client.generate_latest)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: prometheus_client.CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    query_params(request)
    return web.json_response({"status": "ok", "functions": len(request.app[FUNCTIONS].all())})


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
    app.on_shutdown.append(image_functions.end_follows)
    if token is not None:
        routes.attach(app, token, functions, config.port)
    app.add_routes(image_functions.ROUTES)
    app.add_routes(registries.ROUTES)
    app.add_routes([web.get("/healthz", healthz), web.get("/metrics", get_metrics)])
    app.add_routes(legacy.ROUTES)
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
