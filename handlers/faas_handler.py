"""faasd handler SDK: standard library only, Python 3.8 or newer.

Copy this file into your image next to your code. Then:

    from faas_handler import serve

    def app(environ, start_response):          # any WSGI application
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\\n"]

    if __name__ == "__main__":
        serve(app)

faasd starts one container per TCP connection. The handler connects to ``/control.sock`` and
receives one JSON message (protocol v1) with the client's socket attached (SCM_RIGHTS).
``serve`` then runs the WSGI app for every request on that connection (keep-alive) and returns
when the client is done. ``accept()`` gives you the raw socket and metadata instead.
"""

import array
import io
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote_to_bytes

CONTROL_SOCKET = os.environ.get("FAAS_CONTROL_SOCKET", "/control.sock")
MAX_MESSAGE_BYTES = 1024
MAX_CHUNKED_BODY_BYTES = 64 * 1024 * 1024
MAX_DRAIN_BYTES = 1024 * 1024


class HandoffError(Exception):
    """The daemon's message did not carry a client socket."""


def accept(path=CONTROL_SOCKET):
    """Connect to the control socket and return ``(client_socket, metadata_dict)``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(path)
        fds = array.array("i")
        message, ancillary, _flags, _address = control.recvmsg(
            MAX_MESSAGE_BYTES, socket.CMSG_SPACE(fds.itemsize)
        )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise HandoffError("the control message carried no file descriptor")
    for extra in fds[1:]:
        os.close(extra)
    metadata = json.loads(message.decode("utf-8")) if message else {}
    return socket.socket(fileno=fds[0]), metadata


def serve(app, path=CONTROL_SOCKET):
    """Take the connection from faasd and run ``app`` (WSGI) on it until the client is done."""
    client, metadata = accept(path)
    with client:
        client.setblocking(True)
        _WSGIConnection(client, metadata, app)


class _ChunkedBodyTooLarge(Exception):
    pass


class _WSGIConnection(BaseHTTPRequestHandler):
    """http.server's request parsing and keep-alive rules, with a WSGI app behind them."""

    protocol_version = "HTTP/1.1"
    server_version = "faas_handler/1"

    def __init__(self, client, metadata, app):
        self.metadata = metadata
        self.app = app
        peer = metadata.get("peer") or ""
        host, _, port = peer.rpartition(":")
        super().__init__(client, (host or peer, int(port) if port.isdigit() else 0), None)

    def __getattr__(self, name):
        # http.server dispatches to do_<METHOD>; every method goes to the WSGI app.
        if name.startswith("do_"):
            return self._run_app
        raise AttributeError(name)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.metadata.get("id", "-"), format % args))

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return _LimitedReader(self.rfile, length)

    def _environ(self, body):
        path, _, query = self.path.partition("?")
        local = self.connection.getsockname()
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": _unquote_latin1(path),
            "QUERY_STRING": query,
            "SERVER_NAME": str(local[0]),
            "SERVER_PORT": str(local[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": self.headers.get("Content-Length", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "faas.metadata": self.metadata,
        }
        for key, value in self.headers.items():
            name = "HTTP_" + key.upper().replace("-", "_")
            if name in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            environ[name] = environ[name] + "," + value if name in environ else value
        return environ

    def _run_app(self):
        try:
            body = self._body()
        except (ValueError, _ChunkedBodyTooLarge) as exc:
            self.send_error(400, "Bad request body: %s" % exc)
            return
        response = _Response()
        try:
            result = self.app(self._environ(body), response.start_response)
            try:
                chunks = list(result) if isinstance(result, (list, tuple)) else result
                self._send(response, chunks)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception as exc:  # the app failed: answer 500 if nothing was sent yet
            self.log_message("app error: %r", exc)
            if not response.sent:
                self.send_error(500, "Internal Server Error")
            self.close_connection = True
        if isinstance(body, _LimitedReader) and not body.drain(MAX_DRAIN_BYTES):
            self.close_connection = True

    def _send(self, response, chunks):
        if response.status is None:
            raise RuntimeError("the app returned without calling start_response")
        headers = response.headers
        names = {name.lower() for name, _ in headers}
        known_length = isinstance(chunks, list)
        if known_length and "content-length" not in names:
            headers.append(("Content-Length", str(sum(len(c) for c in chunks))))
        chunked = not known_length and "content-length" not in names and self.request_version == "HTTP/1.1"
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif not known_length and "content-length" not in names:
            self.close_connection = True  # HTTP/1.0 without a length: the end is the close
        code, _, reason = response.status.partition(" ")
        self.send_response(int(code), reason or None)
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        response.sent = True
        for chunk in chunks:
            if not chunk:
                continue
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.wfile.write(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Response:
    """Holds what ``start_response`` was given."""

    def __init__(self):
        self.status = None
        self.headers = []
        self.sent = False

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response called twice without exc_info")
        self.status = status
        self.headers = list(headers)
        return lambda data: None  # the legacy write() callable; apps should return an iterable


class _LimitedReader(io.RawIOBase):
    """wsgi.input for a Content-Length body: never reads past the body into the next request."""

    def __init__(self, stream, length):
        self._stream = stream
        self._left = length

    def readable(self):
        return True

    def readinto(self, buffer):
        if self._left <= 0:
            return 0
        data = self._stream.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def read(self, size=-1):
        if size is None or size < 0:
            size = self._left
        data = self._stream.read(min(size, self._left)) if self._left > 0 else b""
        self._left -= len(data)
        return data

    def readline(self, size=-1):
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.readline(limit) if limit > 0 else b""
        self._left -= len(data)
        return data

    def drain(self, most):
        """Skip what the app did not read; False if more than ``most`` bytes were left."""
        if self._left > most:
            return False
        while self._left > 0 and self.read(65536):
            pass
        return True


def _read_chunked(stream):
    body = bytearray()
    while True:
        line = stream.readline(1024)
        size = int(line.split(b";")[0].strip() or b"x", 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return io.BytesIO(bytes(body))
        if len(body) + size > MAX_CHUNKED_BODY_BYTES:
            raise _ChunkedBodyTooLarge("chunked body over %d bytes" % MAX_CHUNKED_BODY_BYTES)
        body += stream.read(size)
        stream.readline(1024)


def _unquote_latin1(path):
    return unquote_to_bytes(path).decode("latin-1")
