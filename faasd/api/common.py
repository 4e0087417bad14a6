"""What every route of the control API shares: the app's state, checked query parameters and
path segments, bounded bodies, and the JSON shape of a function.

Each check raises a ``FaasError`` (400 unless it says otherwise) before anything is read or changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import PayloadEncodingError

from faasd.config import Config
from faasd.errors import (
    ImageTooLarge,
    InvalidImage,
    InvalidRequest,
)
from faasd.functions import Functions
from faasd.images.archive import check_reference
from faasd.images.layers import LayerStore
from faasd.images.logins import Logins
from faasd.images.upload import UploadWriter, upload_cut, write_failure
from faasd.logs import Logs
from faasd.registry import Function, validate_name
from faasd.source.functions import SourceFunctions
from faasd.source.runtimes import Runtimes, source_fields

log = logging.getLogger(__name__)

# The app's state, attached by faasd.api.make_app.
CONFIG = web.AppKey("config", Config)
FUNCTIONS = web.AppKey("functions", Functions)
LOGS = web.AppKey("logs", Logs)
LAYERS = web.AppKey("layers", LayerStore)
RUNTIMES = web.AppKey("runtimes", Runtimes)
SOURCES = web.AppKey("sources", SourceFunctions)
LOGINS = web.AppKey("logins", Logins)
UPLOAD_CHUNK_BYTES = 1 << 20


def function_json(function: Function) -> dict[str, Any]:
    version = function.current
    return {
        "name": function.name,
        "ip": str(function.ip),
        "version": version.number,
        "image": version.image,
        "digest": version.digest,
        "pulled": version.pulled,
        "entrypoint": list(version.config.entrypoint),
        "cmd": list(version.config.cmd),
        "env": list(version.config.env),
        "limits": dataclasses.asdict(version.limits),
        "created": function.created,
        "updated": version.created,
        **source_fields(version.config),
    }


def shown(value: str, limit: int = 64) -> str:
    """``value`` quoted for an error message, cut short so a huge input does not come back whole."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def query_params(request: web.Request, allowed: frozenset[str] = frozenset()) -> dict[str, str]:
    """The query string as a dict, refusing parameters the route does not take or that repeat."""
    for key in request.query:
        if key not in allowed:
            takes = ", ".join(sorted(allowed)) or "no parameters"
            raise InvalidRequest(f"unknown query parameter {shown(key)}: {request.path} takes {takes}")
        if len(request.query.getall(key)) > 1:
            raise InvalidRequest(f"the query parameter {key!r} is given more than once: give it once")
    return dict(request.query)


def reference_param(params: dict[str, str], key: str) -> str | None:
    """The image reference in ``params[key]`` (None when absent), refused unless an image could have it."""
    value = params.get(key)
    if value is not None:
        check_reference(value, key)
    return value


def function_name(request: web.Request) -> str:
    """The ``{name}`` of the route, refused with a 400 before anything else happens."""
    return validate_name(request.match_info["name"])


async def receive_upload(request: web.Request, function: str) -> Path:
    """Stream the request body to a file under the state dir, less the layers the store holds;
    memory stays flat."""
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > config.max_upload_bytes:
        raise ImageTooLarge(
            f"the upload declares {request.content_length} bytes, over the {config.max_upload_bytes} byte limit"
        )
    fd, name = tempfile.mkstemp(dir=config.uploads_dir, suffix=".tar")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            upload = UploadWriter(out, request.app[LAYERS])
            async for chunk in request.content.iter_chunked(UPLOAD_CHUNK_BYTES):
                if upload.received + len(chunk) > config.max_upload_bytes:
                    raise ImageTooLarge(f"the upload is over the {config.max_upload_bytes} byte limit")
                await asyncio.to_thread(upload.write, chunk)
            summary = await asyncio.to_thread(upload.finish)
        if summary.received == 0:
            raise InvalidImage("the request has no body: send the image tarball (docker save IMAGE | faas new NAME)")
        log.info(
            "upload received function=%s bytes=%d written=%d layers_left_out=%d layers_skipped=%d skipped_bytes=%d",
            function,
            summary.received,
            summary.written,
            summary.markers,
            summary.skipped,
            summary.skipped_bytes,
        )
        return path
    except (ConnectionError, PayloadEncodingError) as exc:
        # The client hung up (aiohttp's ConnectionResetError) or its body's framing broke off.
        path.unlink(missing_ok=True)
        raise upload_cut(function, upload.received, exc) from exc
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise write_failure(exc, config.uploads_dir) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def flag_param(params: dict[str, str], key: str) -> bool:
    """A yes/no query parameter: ``1`` or ``true``, ``0`` or ``false``; absent is no."""
    value = params.get(key, "0").lower()
    if value not in ("0", "1", "false", "true"):
        raise InvalidRequest(f"the query parameter {key} is {shown(value)}: give 1 or 0")
    return value in ("1", "true")


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The request's JSON body, read as it streams and refused once over ``max_bytes`` or not JSON."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise InvalidRequest(f"the body declares {request.content_length} bytes, over the {max_bytes} byte limit")
    data = bytearray()
    async for chunk in request.content.iter_chunked(UPLOAD_CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            raise InvalidRequest(f"the body is over the {max_bytes} byte limit")
    try:
        return await asyncio.to_thread(json.loads, data)  # a job's body parses for a while: off the loop
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from exc
