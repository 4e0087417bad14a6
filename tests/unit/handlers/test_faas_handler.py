"""The handler SDK and the C handler against a real control socket and a real TCP client.

The test plays the daemon: it accepts a TCP connection on 127.0.0.1, listens on a control
socket, and hands the accepted socket to the handler (run as a subprocess) with SCM_RIGHTS.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HANDLERS = Path(__file__).resolve().parents[3] / "handlers"
APP = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from faas_handler import serve

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (part for part in [b"a", b"b", b"c"])
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({
            "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"], "body": body.decode(),
            "remote": environ["REMOTE_ADDR"], "id": environ["faas.metadata"]["id"],
            "header": environ.get("HTTP_X_TEST", ""),
        }).encode()]

    serve(app)
    """
)


@contextmanager
def handed_over(tmp_path: Path, handler: list[str]) -> Iterator[socket.socket]:
    """Start ``handler``, give it a fresh TCP connection, and yield our (client) end."""
    control_path = tmp_path / "control.sock"
    control = socket.socket(socket.AF_UNIX)
    control.bind(str(control_path))
    control.listen(1)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, peer = listener.accept()
    proc = subprocess.Popen(handler, env={**os.environ, "FAAS_CONTROL_SOCKET": str(control_path)})
    try:
        control.settimeout(10)
        conn, _ = control.accept()
        metadata = {"v": 1, "id": "req-1", "function": "t", "version": 1, "deadline": 0, "peer": f"{peer[0]}:{peer[1]}"}
        socket.send_fds(conn, [json.dumps(metadata).encode()], [accepted.fileno()])
        conn.close()
        accepted.close()
        client.settimeout(10)
        yield client
    finally:
        client.close()
        listener.close()
        control.close()
        proc.wait(timeout=10)


def python_handler(tmp_path: Path) -> list[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return [sys.executable, str(app), str(HANDLERS)]


def http_on(sock: socket.socket) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1")
    conn.sock = sock
    return conn


def test_keep_alive_serves_several_requests_on_one_connection(tmp_path: Path) -> None:
    with handed_over(tmp_path, python_handler(tmp_path)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/first?x=1", headers={"X-Test": "yes"})
        first = json.loads(conn.getresponse().read())
        conn.request("POST", "/second", body=b"payload")
        second = json.loads(conn.getresponse().read())
    assert first == {
        "method": "GET",
        "path": "/first",
        "query": "x=1",
        "body": "",
        "remote": "127.0.0.1",
        "id": "req-1",
        "header": "yes",
    }
    assert (second["method"], second["body"]) == ("POST", "payload")


def test_chunked_request_body(tmp_path: Path) -> None:
    with handed_over(tmp_path, python_handler(tmp_path)) as sock:
        conn = http_on(sock)
        conn.request(
            "POST", "/", body=iter([b"hello ", b"world"]), encode_chunked=True, headers={"Transfer-Encoding": "chunked"}
        )
        assert json.loads(conn.getresponse().read())["body"] == "hello world"


def test_streamed_response_is_chunked(tmp_path: Path) -> None:
    with handed_over(tmp_path, python_handler(tmp_path)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/stream")
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"abc"


def test_http_10_closes_after_the_response(tmp_path: Path) -> None:
    with handed_over(tmp_path, python_handler(tmp_path)) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data and data.endswith(b"\r\n\r\nabc")


def test_app_exception_is_a_500(tmp_path: Path) -> None:
    with handed_over(tmp_path, python_handler(tmp_path)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/boom")
        assert conn.getresponse().status == 500


def test_malformed_request_is_a_400(tmp_path: Path) -> None:
    with handed_over(tmp_path, python_handler(tmp_path)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_accept_without_an_fd_is_a_clear_error(tmp_path: Path) -> None:
    sys.path.insert(0, str(HANDLERS))
    import faas_handler

    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def daemon_without_fd() -> None:
        conn, _ = server.accept()
        conn.sendall(b'{"v":1}')
        conn.close()

    thread = threading.Thread(target=daemon_without_fd)
    thread.start()
    with pytest.raises(faas_handler.HandoffError, match="no file descriptor"):
        faas_handler.accept(str(path))
    thread.join()
    server.close()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the C handler")
def test_c_handler_answers_with_its_argument(tmp_path: Path) -> None:
    binary = tmp_path / "hello"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HANDLERS / "c" / "hello.c")], check=True)
    with handed_over(tmp_path, [str(binary), "from C"]) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"from C\n")
