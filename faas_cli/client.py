"""A small client of the faasd control API (stdlib ``http.client``).

Transport (an ``Endpoint``: the unix socket, or a TCP listener reached by URL with a
bearer token), one method per endpoint of the API (``Client``), and one function that
turns a status plus the JSON ``error`` back into a typed exception.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import ssl
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_SOCKET = Path("/run/faasd/faasd.sock")
DEFAULT_TOKEN_FILE = Path("/var/lib/faasd/api.token")
UPLOAD_BLOCK_BYTES = 1 << 20
STREAM_BLOCK_BYTES = 1 << 16


class ClientError(Exception):
    """Base class of what the CLI reports to the user."""


class DaemonUnreachable(ClientError):
    """Raised when nothing answers at the daemon's address."""


class ApiError(ClientError):
    """Raised when the daemon answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ApiError):
    """Raised on 404: no function by that name."""


class Unauthorized(ApiError):
    """Raised on 401: the TCP listener wants a token, or a different one."""


def error_from_response(status: int, body: bytes) -> ApiError:
    """The typed error for a non-2xx answer, with the daemon's own message when it sent one."""
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or http.client.responses.get(status, "error")
    return {401: Unauthorized, 404: NotFound}.get(status, ApiError)(status, message)


class Endpoint(Protocol):
    """Where the daemon is: makes connections and explains failures to reach it."""

    def connection(self) -> http.client.HTTPConnection: ...

    def unreachable(self, exc: Exception) -> DaemonUnreachable: ...


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


@dataclass(frozen=True)
class UnixEndpoint:
    """The daemon's unix socket; its file mode decides who may use it."""

    path: Path = DEFAULT_SOCKET
    timeout: float | None = None  # seconds for each connect, send and receive; None: wait

    def __str__(self) -> str:
        return str(self.path)

    def connection(self) -> http.client.HTTPConnection:
        return UnixHTTPConnection(self.path, self.timeout)

    def unreachable(self, exc: Exception) -> DaemonUnreachable:
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return DaemonUnreachable(
                f"faasd is not running at {self.path}: start it with 'sudo faasd', "
                "or point --socket / FAAS_SOCKET at its socket"
            )
        if isinstance(exc, PermissionError):
            return DaemonUnreachable(f"no permission to use {self.path}: run as root, or join the 'faas' group")
        return DaemonUnreachable(f"lost the connection to faasd at {self.path}: {exc}")


@dataclass(frozen=True)
class HttpEndpoint:
    """A daemon started with ``--listen``, reached over TCP (directly, or through a TLS proxy)."""

    scheme: str
    host: str
    port: int
    timeout: float | None = None  # seconds for each connect, send and receive; None: wait

    @classmethod
    def parse(cls, url: str) -> HttpEndpoint:
        """``http://127.0.0.1:8080`` or ``https://faas.example``; raises ``ValueError`` otherwise."""
        example = "e.g. http://127.0.0.1:8080"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: give http://HOST:PORT or https://HOST[:PORT], {example}")
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: give only the scheme, host and port (the token goes in --token), {example}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number from 1 to 65535, {example}") from None
        return cls(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host,
                self.port,
                timeout=self.timeout,
                context=ssl.create_default_context(),
                blocksize=UPLOAD_BLOCK_BYTES,
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout, blocksize=UPLOAD_BLOCK_BYTES)

    def unreachable(self, exc: Exception) -> DaemonUnreachable:
        if isinstance(exc, ConnectionRefusedError | socket.gaierror | TimeoutError):
            return DaemonUnreachable(
                f"faasd is not reachable at {self}: {exc}: check --host / FAAS_HOST, "
                "and that faasd runs with --listen on that address"
            )
        return DaemonUnreachable(f"lost the connection to faasd at {self}: {exc}")


def file_blocks(file: io.BufferedReader) -> Iterator[bytes]:
    """A file's contents in upload-sized blocks; from a pipe, each block as soon as it arrives."""
    while block := file.read1(UPLOAD_BLOCK_BYTES):
        yield block


def server_sent_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, str]]:
    """The (event name, data) of each Server-Sent Event of ``response``, as each ends."""
    name, data = "message", list[str]()
    while line := response.readline():
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        field, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if not text:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)


class Client:
    """One method per endpoint of the control API."""

    def __init__(self, endpoint: Endpoint | None = None, token: str | None = None) -> None:
        self.endpoint = endpoint or UnixEndpoint()
        self.token = token

    def deploy(
        self,
        name: str,
        tarball: Iterable[bytes],
        tag: str | None = None,
        image: str | None = None,
        limits: dict[str, str] | None = None,
        force: bool = False,
        environment: dict[str, str] | None = None,
        check: bool = False,
    ) -> dict[str, Any]:
        """Upload the blocks of ``tarball`` as a new version of ``name``; ``limits`` maps a limit
        (memory, cpus, pids, timeout, tmp_size) to its value as the user wrote it: the daemon
        checks it. An exception from ``tarball`` stops the upload before its end, so the daemon
        deploys nothing. The current version's image again is no new version (the answer has
        ``same_as``) unless ``force``. ``environment`` is set over the image's ``Env``. With
        ``check``, a version whose handler never gets ready is refused (422)."""
        settings = {
            "tag": tag,
            "image": image,
            "force": 1 if force else None,
            "check": 1 if check else None,
            "env": json.dumps(environment) if environment else None,
            **(limits or {}),
        }
        query = urlencode({k: v for k, v in settings.items() if v is not None})
        path = f"/v1/functions/{quote(name, safe='')}" + (f"?{query}" if query else "")
        return self._request("POST", path, body=tarball)

    def deploy_source(
        self,
        name: str,
        source: dict[str, Any],
        limits: dict[str, str] | None = None,
        force: bool = False,
        check: bool = False,
    ) -> dict[str, Any]:
        """Deploy ``source`` (``{"runtime", "files", "entry", "handler"}``) as a new version of ``name``;
        with ``check``, one container of it must get ready first (422 otherwise)."""
        flags = {flag: "1" for flag, given in (("force", force), ("check", check)) if given}
        query = urlencode((limits or {}) | flags)
        path = f"/v1/functions/{quote(name, safe='')}/source" + (f"?{query}" if query else "")
        return self._request("POST", path, body=json.dumps(source).encode())

    def run(self, source: dict[str, Any], limits: dict[str, str] | None = None) -> dict[str, Any]:
        """Run ``source`` once with its ``input``, deploying nothing: ``{result, stdout, stderr, exit_code, ...}``."""
        query = urlencode(limits or {})
        return self._request("POST", "/v1/run" + (f"?{query}" if query else ""), body=json.dumps(source).encode())

    def run_stream(self, source: dict[str, Any], limits: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
        """Run ``source`` once, streaming: each Server-Sent Event's (name, data) as it arrives,
        ``message`` for each line the code prints or item it yields, then the answer (``result``,
        or ``error`` when the code failed)."""
        query = urlencode(limits or {})
        body = json.dumps(source | {"stream": True}).encode()
        path = "/v1/run" + (f"?{query}" if query else "")
        with self._open("POST", path, body) as response, self._connection_errors():
            yield from server_sent_events(response)

    def add_runtime(
        self, name: str, tarball: Iterable[bytes], language: str | None = None, tag: str | None = None
    ) -> dict[str, Any]:
        """Upload the blocks of ``tarball`` as runtime ``name``."""
        query = urlencode({k: v for k, v in (("language", language), ("tag", tag)) if v is not None})
        path = f"/v1/runtimes/{quote(name, safe='')}" + (f"?{query}" if query else "")
        return self._request("POST", path, body=tarball)

    def runtimes(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/runtimes")["runtimes"]

    def remove_runtime(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/runtimes/{quote(name, safe='')}")

    def pull(
        self,
        name: str,
        reference: str,
        limits: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        credentials: dict[str, str] | None = None,
        dry_run: bool = False,
        force: bool = False,
        check: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Have faasd pull ``reference`` as a new version of ``name``: its events as they come
        (resolved, layer progress, then deployed, unchanged or planned); an error event raises
        (a failed ``check`` among them)."""
        request: dict[str, Any] = {"reference": reference, "limits": limits or {}, "environment": environment or {}}
        if credentials is not None:
            request["credentials"] = credentials
        request |= {flag: True for flag, given in (("dry_run", dry_run), ("force", force), ("check", check)) if given}
        path = f"/v1/functions/{quote(name, safe='')}/pull"
        with self._open("POST", path, json.dumps(request).encode()) as response, self._connection_errors():
            while line := response.readline():
                event = json.loads(line)
                if event.get("event") == "error":
                    raise error_from_response(int(event["status"]), json.dumps(event).encode())
                yield event

    def login(self, registry: str, username: str, password: str) -> dict[str, Any]:
        """Have faasd check these credentials with ``registry`` and keep them for its pulls."""
        body = json.dumps({"username": username, "password": password}).encode()
        return self._request("PUT", f"/v1/registries/{quote(registry, safe='')}/login", body=body)

    def logout(self, registry: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/registries/{quote(registry, safe='')}/login")

    def held_layers(self, diff_ids: list[str]) -> set[str]:
        """Which of the layers ``diff_ids`` faasd holds, so an upload may leave them out. A faasd
        from before the lookup holds none, as far as a client can tell."""
        body = json.dumps({"diff_ids": diff_ids}).encode()
        try:
            return set(self._request("POST", "/v1/layers/lookup", body=body)["held"])
        except ApiError as exc:
            if exc.status in (404, 405):
                return set()
            raise

    def functions(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/functions")["functions"]

    def get(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/functions/{quote(name, safe='')}")

    def remove(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/functions/{quote(name, safe='')}")

    def versions(self, name: str) -> dict[str, Any]:
        """The kept versions of ``name``: ``{"name", "current", "versions": [...]}``."""
        return self._request("GET", f"/v1/functions/{quote(name, safe='')}/versions")

    def rollback(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Make ``version`` (by default the one before the current) current; returns the function."""
        query = "" if version is None else f"?{urlencode({'version': version})}"
        return self._request("POST", f"/v1/functions/{quote(name, safe='')}/rollback{query}")

    def version_address(self, name: str, version: int) -> dict[str, Any]:
        """Version ``version`` of ``name`` with its own address, given on the first call."""
        return self._request("PUT", f"/v1/functions/{quote(name, safe='')}/versions/{version}/address")

    def metrics(self) -> str:
        """The daemon's metrics in Prometheus text format."""
        return self._request("GET", "/metrics", decode=bytes.decode)

    def logs(
        self, name: str, tail: int | None = None, since: str | None = None, follow: bool = False
    ) -> Generator[bytes]:
        """The function's log lines, in chunks as they arrive; with ``follow``, until closed."""
        params = (("tail", tail), ("since", since), ("follow", 1 if follow else None))
        query = urlencode({key: value for key, value in params if value is not None})
        path = f"/v1/functions/{quote(name, safe='')}/logs" + (f"?{query}" if query else "")
        with self._open("GET", path) as response, self._connection_errors():
            while chunk := response.read1(STREAM_BLOCK_BYTES):
                yield chunk

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> Any:
        with self._open(method, path, body) as response, self._connection_errors():
            return decode(response.read())

    @contextlib.contextmanager
    def _open(
        self, method: str, path: str, body: bytes | Iterable[bytes] | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        """Send one request, a body of blocks chunked (one of bytes has its length); yield its
        response, or raise the typed error it stands for."""
        conn = self.endpoint.connection()
        chunked = body is not None and not isinstance(body, bytes)
        headers = {"Transfer-Encoding": "chunked"} if chunked else {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            with self._connection_errors():
                try:
                    conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon refused the upload before reading all of it; its answer says why.
                    pass
                response = conn.getresponse()
                if response.status == 401:
                    raise self._unauthorized(response.read())
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
        except (OSError, http.client.HTTPException) as exc:
            raise self.endpoint.unreachable(exc) from exc

    def _unauthorized(self, body: bytes) -> Unauthorized:
        if self.token is None:
            return Unauthorized(
                401,
                f"faasd at {self.endpoint} needs a token: pass --token or set FAAS_TOKEN "
                f"(faasd keeps it in its state dir, by default {DEFAULT_TOKEN_FILE})",
            )
        reason = error_from_response(401, body)
        return Unauthorized(401, f"faasd at {self.endpoint} refused the token: {reason}")
