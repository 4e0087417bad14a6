"""A small client of the faasd control API over its unix socket (stdlib ``http.client``).

Transport (``UnixHTTPConnection``), one method per endpoint (``Client``), and one function
that turns a status plus the JSON ``error`` back into a typed exception.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = Path("/run/faasd/faasd.sock")
UPLOAD_BLOCK_BYTES = 1 << 20


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

    def deploy(
        self,
        name: str,
        tarball: IO[bytes],
        tag: str | None = None,
        image: str | None = None,
        limits: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Upload ``tarball`` as a new version of ``name``; ``limits`` maps a limit (memory, cpus,
        pids, timeout, tmp_size) to its value as the user wrote it: the daemon checks it."""
        settings = {"tag": tag, "image": image, **(limits or {})}
        query = urlencode({k: v for k, v in settings.items() if v is not None})
        path = f"/v1/functions/{quote(name, safe='')}" + (f"?{query}" if query else "")
        return self._request("POST", path, body=tarball)

    def list(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/functions")["functions"]

    def get(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/functions/{quote(name, safe='')}")

    def remove(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/functions/{quote(name, safe='')}")

    def _request(self, method: str, path: str, body: IO[bytes] | None = None) -> Any:
        conn = UnixHTTPConnection(self.socket_path)
        headers = {"Transfer-Encoding": "chunked"} if body is not None else {}
        try:
            try:
                conn.request(method, path, body=body, headers=headers, encode_chunked=body is not None)
            except (BrokenPipeError, ConnectionResetError):
                # The daemon refused the upload before reading all of it; its answer says why.
                pass
            response = conn.getresponse()
            data = response.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"faasd is not running at {self.socket_path}: start it with 'sudo faasd', "
                "or point --socket / FAAS_SOCKET at its socket"
            ) from exc
        except PermissionError as exc:
            raise DaemonUnreachable(f"no permission to use {self.socket_path}: run as root") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(f"lost the connection to faasd at {self.socket_path}: {exc}") from exc
        finally:
            conn.close()
        if response.status >= 400:
            raise error_from_response(response.status, data)
        return json.loads(data)
