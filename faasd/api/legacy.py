"""The original wire API, kept for existing clients.

POST /api/new        header X-Image-Name: the function's name; body: the tarball -> the IP
GET  /api/ip/{name}  -> the IP, as text
GET  /api/list       -> [{"name", "ip"}]
"""

from __future__ import annotations

from aiohttp import web

from faasd.api.common import FUNCTIONS, function_name, query_params
from faasd.api.functions import deploy
from faasd.errors import InvalidRequest
from faasd.functions import SameImage
from faasd.registry import validate_name


def single_header(request: web.Request, name: str) -> str | None:
    """The value of a header that must appear at most once."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"the {name} header is given {len(values)} times: give it once")
    return values[0] if values else None


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


ROUTES = [
    web.post("/api/new", legacy_new),
    web.get("/api/ip/{name}", legacy_ip),
    web.get("/api/list", legacy_list),
]
