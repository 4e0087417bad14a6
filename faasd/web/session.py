"""The page's session: a cookie the login form sets, accepted by the TCP API beside the token.

The cookie's value is an HMAC of a fixed label under the token, so it is worthless without the
token, needs no state on the server, and changes when the token does (deleting ``api.token``
logs every browser out). It is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no
other site's page sends it); a request that changes something must also carry ``X-Faasd-Web``,
which no cross-site form can add, so the cookie alone cannot be used from another page.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import hdrs, web

from faasd.auth import token_matches

COOKIE = "faasd_session"
CSRF_HEADER = "X-Faasd-Web"
LABEL = b"faasd web session v1"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What loads without a session: the page and its assets hold no data, the login form checks the token.
PUBLIC = frozenset({"/", "/ui", "/ui/", "/ui/login"})
PUBLIC_PREFIX = "/ui/static/"


def session_value(token: str) -> str:
    return hmac.new(token.encode(), LABEL, hashlib.sha256).hexdigest()


def is_public(request: web.Request) -> bool:
    return request.path in PUBLIC or request.path.startswith(PUBLIC_PREFIX)


def has_session(request: web.Request, token: str) -> bool:
    """The request carries the page's cookie and, to change anything, the page's header."""
    cookie = request.cookies.get(COOKIE)
    if cookie is None or not token_matches(session_value(token), cookie):
        return False
    return request.method in SAFE_METHODS or request.headers.get(CSRF_HEADER) == "1"


def set_session(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict", path="/")


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def no_store(response: web.StreamResponse) -> web.StreamResponse:
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response
