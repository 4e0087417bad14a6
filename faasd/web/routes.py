"""The page's routes on the TCP app: the page, its assets, login and logout, and the probe."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from aiohttp import hdrs, web

from faasd.auth import token_matches
from faasd.errors import InvalidRequest, Unauthorized
from faasd.functions import Functions
from faasd.web import probe
from faasd.web.session import clear_session, no_store, set_session

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ASSETS = frozenset({"app.js", "style.css"})
MAX_LOGIN_BYTES = 4096
# The page runs only its own script and style, talks only to this origin, and is never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def to_page(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def page(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS, hdrs.CACHE_CONTROL: "no-store"})


async def login(token: str, request: web.Request) -> web.Response:
    """Check the token from the form; the answer sets the session cookie. The token is in the
    body of a POST, never in a URL, so no history, log or Referer keeps it."""
    if request.content_length is None or request.content_length > MAX_LOGIN_BYTES:
        raise InvalidRequest(f"send the form, at most {MAX_LOGIN_BYTES} bytes, with its length")
    form = await request.post()
    presented = form.get("token")
    if not isinstance(presented, str) or not token_matches(token, presented.strip()):
        log.warning("web login refused peer=%s", request.remote)
        raise Unauthorized("that is not the token in api.token in faasd's state dir")
    response = web.Response(status=204)
    set_session(response, token)
    return response


async def logout(_request: web.Request) -> web.StreamResponse:
    response = web.Response(status=204)
    clear_session(response)
    return no_store(response)


async def static(request: web.Request) -> web.FileResponse:
    """One of the few files in ``static/``, by its exact name: nothing else is reachable."""
    name = request.match_info["file"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers=SECURITY_HEADERS)


def attach(app: web.Application, token: str, functions: Functions, port: int) -> None:
    """Add the page's routes to the TCP app ``app``, whose middleware checks ``token``."""
    app.add_routes(
        [
            web.get("/", to_page),
            web.get("/ui/", page),
            web.get("/ui/static/{file}", static),
            web.post("/ui/login", functools.partial(login, token)),
            web.post("/ui/logout", logout),
            web.post("/ui/functions/{name}/request", functools.partial(probe.send, functions, port)),
        ]
    )
