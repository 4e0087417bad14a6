"""A small client of the faasd control API over its unix socket (stdlib ``http.client``).

Transport (``UnixHTTPConnection``), one method per endpoint (``Client``), and one function
that turns a status plus the JSON ``error`` back into a typed exception.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = Path("/run/faasd/faasd.sock")
UPLOAD_BLOCK_BYTES = 1 << 20
STREAM_BLOCK_BYTES = 1 << 16


class ClientError(Exception):
    """Base class of what the CLI reports to the user."""


class DaemonUnreachable(ClientError):
    """Raised when nothing answers on the control socket."""


class ApiError(ClientError):
    """Raised when the daemon answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ApiError):
    """Raised on 404: no function by that name."""


def error_from_response(status: int, body: bytes) -> ApiError:
    """The typed error for a non-2xx answer, with the daemon's own message when it sent one."""
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or http.client.responses.get(status, "error")
    return (NotFound if status == 404 else ApiError)(status, message)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket."""

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=UPLOAD_BLOCK_BYTES)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One method per endpoint of the control API."""

    def __init__(self, socket_path: Path = DEFAULT_SOCKET) -> None:
        self.socket_path = socket_path

    def deploy(self, name: str, tarball: IO[bytes], tag: str | None = None, image: str | None = None) -> dict[str, Any]:
        query = urlencode({k: v for k, v in (("tag", tag), ("image", image)) if v})
        path = f"/v1/functions/{quote(name, safe='')}" + (f"?{query}" if query else "")
        return self._request("POST", path, body=tarball)

    def list(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/functions")["functions"]

    def get(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/functions/{quote(name, safe='')}")

    def remove(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/functions/{quote(name, safe='')}")

    def logs(
        self, name: str, tail: int | None = None, since: str | None = None, follow: bool = False
    ) -> Iterator[bytes]:
        """The function's log lines, in chunks as they arrive; with ``follow``, until closed."""
        params = (("tail", tail), ("since", since), ("follow", 1 if follow else None))
        query = urlencode({key: value for key, value in params if value is not None})
        path = f"/v1/functions/{quote(name, safe='')}/logs" + (f"?{query}" if query else "")
        with self._open("GET", path) as response, self._connection_errors():
            while chunk := response.read1(STREAM_BLOCK_BYTES):
                yield chunk

    def _request(self, method: str, path: str, body: IO[bytes] | None = None) -> Any:
        with self._open(method, path, body) as response, self._connection_errors():
            return json.loads(response.read())

    @contextlib.contextmanager
    def _open(self, method: str, path: str, body: IO[bytes] | None = None) -> Iterator[http.client.HTTPResponse]:
        """Send one request; yield its response, or raise the typed error it stands for."""
        conn = UnixHTTPConnection(self.socket_path)
        headers = {"Transfer-Encoding": "chunked"} if body is not None else {}
        try:
            with self._connection_errors():
                try:
                    conn.request(method, path, body=body, headers=headers, encode_chunked=body is not None)
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon refused the upload before reading all of it; its answer says why.
                    pass
                response = conn.getresponse()
                if response.status >= 400:
                    raise error_from_response(response.status, response.read())
            yield response
        finally:
            conn.close()

    @contextlib.contextmanager
    def _connection_errors(self) -> Iterator[None]:
        """Socket and protocol failures, as what the user should do about them."""
        try:
            yield
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"faasd is not running at {self.socket_path}: start it with 'sudo faasd', "
                "or point --socket / FAAS_SOCKET at its socket"
            ) from exc
        except PermissionError as exc:
            raise DaemonUnreachable(f"no permission to use {self.socket_path}: run as root") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(f"lost the connection to faasd at {self.socket_path}: {exc}") from exc
