"""The WSGI side of the handler SDK, and the C handler, handed a real socket (see harness.py)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.handlers.harness import HANDLERS, faas_handler, handed_over, http_on, in_process, in_thread, read_to_eof


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answers with the str parts of its environ and the body, as JSON."""
    seen = {key: value for key, value in environ.items() if isinstance(value, str)}
    seen["body"] = environ["wsgi.input"].read().decode()
    seen["metadata"] = environ["faas.metadata"]
    seen["input_terminated"] = environ["wsgi.input_terminated"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (part for part in [b"a", b"", b"bc"])


def test_get_sees_a_pep_3333_environ(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/a%20b?x=1&y=%20", headers={"X-Test": "yes", "X_Test": "spoof"})
        response = conn.getresponse()
        seen = json.loads(response.read())
        server_port, client_port = sock.getpeername()[1], sock.getsockname()[1]
    assert response.status == 200 and response.getheader("Content-Length") is not None
    assert {key: seen[key] for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING")} == {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/a b",
        "QUERY_STRING": "x=1&y=%20",
    }
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.1", str(server_port))
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("127.0.0.1", str(client_port))
    assert (seen["SERVER_PROTOCOL"], seen["wsgi.url_scheme"]) == ("HTTP/1.1", "http")
    assert seen["HTTP_X_TEST"] == "yes"  # and the underscore spelling did not overwrite it
    assert seen["metadata"]["id"] == "req-1" and seen["input_terminated"] is True
    assert "PATH" not in seen  # the process environment is not the request's


def test_a_prefix_in_the_metadata_mounts_the_app_under_it(tmp_path: Path) -> None:
    """The gateway's route (/function/NAME) is SCRIPT_NAME; a later request elsewhere is not under it."""
    with handed_over(tmp_path, in_thread(echo), prefix="/function/fn") as sock:
        conn = http_on(sock)
        seen = []
        for target in ["/function/fn/a%20b?x=1", "/function/fn", "/function/fnord/x", "/other"]:
            conn.request("GET", target)
            answer = json.loads(conn.getresponse().read())
            seen.append((answer["SCRIPT_NAME"], answer["PATH_INFO"], answer["QUERY_STRING"]))
    assert seen == [
        ("/function/fn", "/a b", "x=1"),
        ("/function/fn", "", ""),
        ("", "/function/fnord/x", ""),
        ("", "/other", ""),
    ]


def test_a_plain_handler_sees_the_path_after_the_prefix(tmp_path: Path) -> None:
    def handle(request: Any) -> dict[str, Any]:
        return {"path": request.path, "prefix": request.metadata.get("prefix")}

    with handed_over(tmp_path, in_thread(handle), prefix="/run/math/add") as sock:
        conn = http_on(sock)
        conn.request("POST", "/run/math/add", body=b"{}")
        assert json.loads(conn.getresponse().read()) == {"path": "/", "prefix": "/run/math/add"}


def test_keep_alive_serves_several_requests_on_one_connection(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/first")
        first = conn.getresponse()
        assert json.loads(first.read())["PATH_INFO"] == "/first"
        conn.request("POST", "/second", body=b"payload", headers={"Content-Type": "text/plain"})
        second = json.loads(conn.getresponse().read())
    assert first.getheader("Connection") is None
    assert (second["REQUEST_METHOD"], second["body"]) == ("POST", "payload")
    assert (second["CONTENT_TYPE"], second["CONTENT_LENGTH"]) == ("text/plain", "7")


def test_chunked_request_body_arrives_whole_with_a_length(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/", body=iter([b"hello ", b"world"]), encode_chunked=True)
        seen = json.loads(conn.getresponse().read())
        conn.request("GET", "/after")
        assert conn.getresponse().status == 200
    assert (seen["body"], seen["CONTENT_LENGTH"]) == ("hello world", "11")


def test_unknown_length_response_is_chunked_and_keeps_the_connection(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(streaming)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.getheader("Transfer-Encoding"), response.read()) == ("chunked", b"abc")
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"abc"


def test_http_10_gets_one_close_delimited_response(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(streaming)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = read_to_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
    assert b"Transfer-Encoding" not in head and body == b"abc"


def test_head_has_headers_and_no_body(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("HEAD", "/")
        head = conn.getresponse()
        assert head.read() == b"" and int(head.getheader("Content-Length")) > 0
        conn.request("GET", "/")  # framing intact: the next response parses
        assert conn.getresponse().status == 200


def test_app_exception_is_a_500_and_a_traceback_in_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("boom")

    with handed_over(tmp_path, in_thread(boom)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 500 and response.read()
        conn.request("GET", "/")  # a complete 500 leaves the connection usable
        assert conn.getresponse().status == 500
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_failure_after_the_headers_cuts_the_connection(tmp_path: Path) -> None:
    def half(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"part"
        raise RuntimeError("late")

    with handed_over(tmp_path, in_thread(half)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()


def test_start_response_with_exc_info_replaces_the_headers(tmp_path: Path) -> None:
    def recovering(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("X-Stale", "1")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("503 Service Unavailable", [("Retry-After", "1")], sys.exc_info())
        return [b"busy"]

    with handed_over(tmp_path, in_thread(recovering)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.getheader("X-Stale"), response.read()) == (503, None, b"busy")


def test_legacy_write_callable_streams_chunked(tmp_path: Path) -> None:
    def writer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"early ")
        return [b"late"]

    with handed_over(tmp_path, in_thread(writer)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"early late"


def test_body_the_app_ignored_is_skipped_for_the_next_request(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(streaming)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/", body=b"x" * 100_000)
        assert conn.getresponse().read() == b"abc"
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"abc"


def test_expect_100_continue(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"hi")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert json.loads(response.read())["body"] == "hi"


def test_refused_upload_still_gets_its_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faas_handler, "MAX_CHUNKED_BODY", 10_000)
    chunk = b"%x\r\n%s\r\n" % (1000, b"x" * 1000)
    with handed_over(tmp_path, in_thread(echo)) as sock:
        # Refused at 10 kB, while 2 MB more are on their way: they must not turn into a reset.
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2000)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/9.x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 100 + b"\r\n", 431),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
)
def test_malformed_request_is_refused_and_the_connection_closed(
    tmp_path: Path, request_bytes: bytes, status: int
) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock).startswith(b"HTTP/1.1 %d " % status)


def test_accept_returns_a_blocking_socket_and_the_metadata(tmp_path: Path) -> None:
    accepted: list[tuple[socket.socket, dict[str, Any]]] = []

    def start(path: str) -> Callable[[], None]:
        thread = threading.Thread(target=lambda: accepted.append(faas_handler.accept(path)))
        thread.start()
        return lambda: thread.join(10)

    with handed_over(tmp_path, start) as sock:
        server_address = sock.getpeername()
    handed, metadata = accepted[0]
    with handed:
        assert handed.getblocking() and handed.getsockname() == server_address
    assert metadata["function"] == "fn"


@pytest.mark.parametrize(
    ("send", "error"),
    [
        (lambda conn: conn.sendall(b'{"v": 1}'), "carried no file descriptor"),
        (lambda conn: conn.send(b"{}"), r"carried no file descriptor \(2 bytes"),
        (lambda conn: None, "closed without a connection"),  # a retired container: Retired, which serve() ends on
        (lambda conn: socket.send_fds(conn, [b"not json"], [conn.fileno()]), "not protocol v1 metadata"),
    ],
)
def test_accept_without_a_socket_is_a_clear_error(
    tmp_path: Path, send: Callable[[socket.socket], None], error: str
) -> None:
    path = str(tmp_path / "control.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)

        def daemon() -> None:
            conn, _ = server.accept()
            with conn:
                send(conn)

        thread = threading.Thread(target=daemon)
        thread.start()
        with pytest.raises(faas_handler.HandoffError, match=error) as raised:
            faas_handler.accept(path)
        thread.join(10)
    assert isinstance(raised.value, faas_handler.Retired) == ("closed without" in error)


def test_accept_outside_faasd_says_so(tmp_path: Path) -> None:
    with pytest.raises(faas_handler.HandoffError, match="is this running under faasd"):
        faas_handler.accept(str(tmp_path / "missing.sock"))


def test_example_app_runs_as_its_image_runs_it(tmp_path: Path) -> None:
    start = in_process([sys.executable, str(HANDLERS / "hello" / "app.py")], {"PYTHONPATH": str(HANDLERS)})
    with handed_over(tmp_path, start) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"Hello from faasd\n"
        conn.request("POST", "/echo?q=1", body=b"ping")
        assert json.loads(conn.getresponse().read()) == {
            "method": "POST",
            "path": "/echo",
            "query": "q=1",
            "body": "ping",
            "request_id": "req-1",
        }


@pytest.fixture(scope="module")
def c_handler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the C handler")
    binary = tmp_path_factory.mktemp("c") / "hello"
    subprocess.run(["gcc", "-static", "-Os", "-o", str(binary), str(HANDLERS / "c" / "hello.c")], check=True)
    return binary


@pytest.mark.parametrize(("args", "body"), [([], b"hello from C\n"), (["v2 says hi"], b"v2 says hi\n")])
def test_c_handler_answers_once_and_exits(tmp_path: Path, c_handler: Path, args: list[str], body: bytes) -> None:
    with handed_over(tmp_path, in_process([str(c_handler), *args])) as sock:
        conn = http_on(sock)
        conn.request("GET", "/", headers={"X-Pad": "p" * 10_000})  # headers larger than one read
        response = conn.getresponse()
        assert (response.status, response.getheader("Connection"), response.read()) == (200, "close", body)


def test_c_handler_lets_an_unwanted_body_arrive_before_closing(tmp_path: Path, c_handler: Path) -> None:
    with handed_over(tmp_path, in_process([str(c_handler)])) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2_000_000)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock).endswith(b"\r\n\r\nhello from C\n")
