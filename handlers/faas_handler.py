"""faasd handler SDK: one file, standard library only, Python 3.8 or newer.

Copy this file into your image next to your code (for example to ``/app/faas_handler.py``), then:

    from faas_handler import serve

    def app(environ, start_response):          # any WSGI application (PEP 3333)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\\n"]

    if __name__ == "__main__":
        serve(app)

faasd starts one container per TCP connection. The handler connects to ``/control.sock`` and
receives one message (handler protocol v1): a JSON object with the request's metadata, and the
client's connected TCP socket attached with SCM_RIGHTS. ``serve`` runs the app for every request
the client sends on that connection (HTTP/1.1 keep-alive) and returns when the client is done.
``accept()`` gives you the raw socket and the metadata instead, to speak any protocol yourself.
The metadata is also in the WSGI environ as ``faas.metadata``. ``FAAS_CONTROL_SOCKET`` overrides
the control socket's path, for tests.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates dict[...] or X | None

import array
import io
import json
import os
import re
import socket
import sys
import time
import wsgiref.handlers
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

CONTROL_SOCKET = "/control.sock"
MAX_MESSAGE_BYTES = 1024  # protocol v1: the metadata never exceeds this
MAX_CHUNKED_BODY = 16 * 1024 * 1024  # a chunked request body is read whole, into memory
MAX_DRAIN = 1024 * 1024  # body bytes the app left unread that are skipped to keep the connection
MAX_LINE = 65536  # as http.server: request line, each header line, chunk size lines
SERVER_SOFTWARE = "faas_handler/1"

if TYPE_CHECKING:  # subscripting collections.abc at run time needs 3.9
    WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class HandoffError(Exception):
    """The daemon's control message could not be received or did not carry a client socket."""


def accept(path: str | None = None) -> tuple[socket.socket, dict[str, Any]]:
    """Connect to the control socket; return the client's TCP socket and the request metadata."""
    path = path or os.environ.get("FAAS_CONTROL_SOCKET", CONTROL_SOCKET)
    fds = array.array("i")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        try:
            control.connect(path)
            # socket.recv_fds (3.9+) wraps this very call; recvmsg keeps a single path back to 3.8.
            message, ancillary, _flags, _address = control.recvmsg(MAX_MESSAGE_BYTES, socket.CMSG_SPACE(fds.itemsize))
        except OSError as exc:
            raise HandoffError(f"cannot receive from {path} (is this running under faasd?): {exc}") from exc
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        raise HandoffError(f"the message on {path} carried no file descriptor ({len(message)} bytes of data)")
    for extra in fds[1:]:  # protocol v1 sends exactly one; never leak a surplus
        os.close(extra)
    client = socket.socket(fileno=fds[0])
    try:
        metadata = json.loads(message.decode("utf-8"))
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # also JSONDecodeError and UnicodeDecodeError
        client.close()
        raise HandoffError(f"the message on {path} is not protocol v1 metadata: {exc}") from exc
    # O_NONBLOCK belongs to the open file, which the daemon's asyncio loop shared with us.
    client.setblocking(True)
    return client, metadata


def serve(app: WSGIApp, path: str | None = None) -> None:
    """Take the connection from faasd and run ``app`` on each request until the client is done."""
    client, metadata = accept(path)
    with client:
        try:
            _Connection(client, metadata, app)
        except ConnectionError as exc:  # the client left mid-request: its business, not a failure
            sys.stderr.write(f"faas_handler id={metadata.get('id', '-')} client gone: {exc}\n")
            return
        _linger(client)


def _linger(client: socket.socket, seconds: float = 1.0) -> None:
    """Half-close, then discard what the client still sends, for a moment (RFC 9112 9.6).

    Closing with unread input (say, the rest of a refused upload) makes the kernel answer with a
    reset, which can destroy the last response before the client reads it.
    """
    end = time.monotonic() + seconds
    try:
        client.shutdown(socket.SHUT_WR)
        client.settimeout(seconds)
        while time.monotonic() < end and client.recv(65536):
            pass
    except OSError:  # a timeout or a reset: either way the client has had its chance
        pass


class _Refused(Exception):
    """A request body whose framing the server must refuse (RFC 9112 section 6)."""

    def __init__(self, status: HTTPStatus, explain: str) -> None:
        super().__init__(explain)
        self.status = status
        self.explain = explain


class _Connection(BaseHTTPRequestHandler):
    """http.server parses requests and keeps the connection alive; wsgiref runs the app.

    Constructing it serves the whole connection (that is how socketserver handlers work).
    """

    protocol_version = "HTTP/1.1"  # lets parse_request keep HTTP/1.1 connections open
    server_version = SERVER_SOFTWARE
    default_request_version = "HTTP/1.0"  # a bad request line still gets a status line (0.9 has none)
    wbufsize = -1  # buffered: status line, headers and a first chunk leave in one segment
    disable_nagle_algorithm = True  # the response is flushed on purpose; Nagle would only delay it

    def __init__(self, client: socket.socket, metadata: dict[str, Any], app: WSGIApp) -> None:
        self.metadata = metadata
        self.app = app
        super().__init__(client, _peer(metadata, client), None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # http.server looks up do_<METHOD>: every method goes to the app
            return self._run_app
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        super().handle_expect_100()
        self.wfile.flush()  # the client waits for it before sending the body
        return True

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"faas_handler id={self.metadata.get('id', '-')} {format % args}\n")

    def _run_app(self) -> None:
        if self.request_version != "HTTP/1.1":
            # An HTTP/1.0 client needs "Connection: keep-alive" both ways; one request is simpler.
            self.close_connection = True
        try:
            body, length = self._request_body()
        except _Refused as refused:
            self.send_error(refused.status, explain=refused.explain)  # also closes: the framing is lost
            return
        response = _Response(body, self.wfile, self._environ(length), self.close_connection, self.log_request)
        response.run(self.app)
        if not response.complete or not body.drain(MAX_DRAIN):
            self.close_connection = True

    def _request_body(self) -> tuple[_Body, str]:
        """``wsgi.input`` and ``CONTENT_LENGTH`` for this request."""
        codings = self.headers.get_all("Transfer-Encoding") or []
        lengths = [value.strip() for value in self.headers.get_all("Content-Length") or []]
        if codings:
            if ",".join(codings).strip().lower() != "chunked":
                raise _Refused(HTTPStatus.NOT_IMPLEMENTED, f"Transfer-Encoding {codings!r} is not supported")
            if lengths or self.request_version != "HTTP/1.1":
                self.close_connection = True  # RFC 9112 6.1: such a message may be smuggling another
            data = _read_chunked(self.rfile)
            return _Body(io.BytesIO(data), len(data)), str(len(data))
        if len(set(lengths)) > 1 or not all(re.fullmatch(r"[0-9]{1,18}", value) for value in lengths):
            raise _Refused(HTTPStatus.BAD_REQUEST, f"Bad Content-Length {lengths!r}")
        return _Body(self.rfile, int(lengths[0]) if lengths else 0), lengths[0] if lengths else ""

    def _environ(self, content_length: str) -> dict[str, Any]:
        """The CGI part of the PEP 3333 environ; wsgiref adds the ``wsgi.*`` keys."""
        path, _, query = self.path.partition("?")
        local = self.connection.getsockname()
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "iso-8859-1"),  # PEP 3333: bytes as latin-1, as wsgiref does
            "QUERY_STRING": query,
            "SERVER_NAME": str(local[0]),
            "SERVER_PORT": str(local[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": content_length,
            "wsgi.input_terminated": True,  # reading wsgi.input to the end stops at the body's end
            "faas.metadata": self.metadata,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if "_" in name or key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue  # "X_User" would pose as "X-User" in the environ; dropped, as nginx does
            environ[key] = environ[key] + "," + value if key in environ else value
        return environ


class _Response(wsgiref.handlers.SimpleHandler):
    """wsgiref's PEP 3333 half (start_response with exc_info, write(), the 500 page, the
    traceback in the log) with the HTTP/1.1 framing wsgiref lacks: Content-Length for any list
    or tuple, else chunked (or, for HTTP/1.0, the end of the connection); no body for HEAD."""

    http_version = "1.1"
    server_software = SERVER_SOFTWARE
    os_environ: dict[str, str] = {}  # wsgiref would copy the process environment into each request

    def __init__(
        self, body: _Body, wfile: Any, environ: dict[str, Any], closing: bool, log: Callable[..., None]
    ) -> None:
        super().__init__(body, wfile, sys.stderr, environ, multithread=False, multiprocess=True)
        self.closing = closing
        self.log = log
        self.framing = "length"  # then "chunked", "close" or "none"
        self.in_body = False
        self.complete = False  # the response ended cleanly: the connection may carry another

    def cleanup_headers(self) -> None:
        code = int(self.status[:3])
        if code < 200 or code in (204, 304):
            self.framing = "none"
        elif "Content-Length" in self.headers:
            pass
        elif isinstance(self.result, (list, tuple)):
            self.headers["Content-Length"] = str(sum(len(part) for part in self.result))
        elif self.environ["SERVER_PROTOCOL"] == "HTTP/1.1":
            self.framing = "chunked"
            self.headers["Transfer-Encoding"] = "chunked"
        else:
            self.framing = "close"
        if self.environ["REQUEST_METHOD"] == "HEAD":
            self.framing = "none"  # decided last: HEAD answers with the headers GET would have
        if self.closing or self.framing == "close":
            self.headers["Connection"] = "close"

    def send_headers(self) -> None:
        super().send_headers()
        self.in_body = True

    def _write(self, data: bytes) -> None:
        if self.in_body:
            if self.framing == "none" or not data:
                return  # an empty chunk would end a chunked body early
            if self.framing == "chunked":
                data = b"%x\r\n%s\r\n" % (len(data), data)
        super()._write(data)

    def finish_content(self) -> None:
        super().finish_content()
        if self.framing == "chunked":
            self.in_body = False
            self._write(b"0\r\n\r\n")
        declared = self.headers.get("Content-Length")
        # A body shorter or longer than its Content-Length leaves the next request unframed.
        self.complete = self.framing != "close" and (self.framing != "length" or declared == str(self.bytes_sent))
        self._flush()  # the response leaves before any body the app left unread is drained

    def close(self) -> None:
        if self.status:  # one log line per response, as http.server writes for its own
            self.log(self.status[:3], self.bytes_sent)
        super().close()


class _Body(io.RawIOBase):
    """``wsgi.input``: the request body and no further, so the next request stays unread."""

    def __init__(self, stream: Any, length: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(min(len(buffer), self._left)) if self._left > 0 else b""
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.readline(limit) if limit > 0 else b""
        self._left -= len(data)
        return data

    def drain(self, most: int) -> bool:
        """Skip what the app left unread; False when that is over ``most`` bytes or cut short."""
        if self._left > most:
            return False
        while self._left > 0 and self.read(65536):
            pass
        return self._left == 0


def _read_chunked(rfile: Any) -> bytes:
    """A whole chunked body (RFC 9112 7.1), read up front so the app sees a plain CONTENT_LENGTH."""
    body = bytearray()
    while True:
        line = rfile.readline(MAX_LINE)
        size = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size):
            raise _Refused(HTTPStatus.BAD_REQUEST, f"Bad chunk size line {line[:40]!r}")
        length = int(size, 16)
        if length == 0:
            break
        if len(body) + length > MAX_CHUNKED_BODY:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Chunked body over {MAX_CHUNKED_BODY} bytes")
        chunk = rfile.read(length)
        if len(chunk) < length or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise _Refused(HTTPStatus.BAD_REQUEST, "Chunk cut short or not followed by CRLF")
        body += chunk
    while rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
        pass  # trailer fields: nothing in WSGI carries them
    return bytes(body)


def _peer(metadata: dict[str, Any], client: socket.socket) -> tuple[str, int]:
    """The client's address: the daemon's ``peer`` ("ip:port"), else the socket's own."""
    host, _, port = str(metadata.get("peer", "")).rpartition(":")
    if host and port.isdigit():
        return host.strip("[]"), int(port)
    return client.getpeername()[:2]
