"""The SDK's own HTTP/1.1 request reading (RFC 9112): the parser on its own, fed tables of good and
hostile input, then what the connection does with it, on a real socket (see harness.py)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.handlers.harness import faas_handler, handed_over, http_on, in_thread, read_to_eof
from tests.unit.handlers.test_faas_handler import echo

MAX_LINE = faas_handler.MAX_LINE


def head(data: bytes) -> object:
    return faas_handler._read_head(io.BytesIO(data))


@pytest.mark.parametrize(
    ("data", "method", "target", "version", "fields"),
    [
        (b"GET / HTTP/1.1\r\nHost: fn\r\n\r\n", "GET", "/", "HTTP/1.1", [("Host", "fn")]),
        (
            b"POST /a%20b?x=1 HTTP/1.1\r\nHost: fn\r\nX-Pad:  both ends \t\r\nEmpty:\r\n\r\n",
            "POST",
            "/a%20b?x=1",
            "HTTP/1.1",
            [("Host", "fn"), ("X-Pad", "both ends"), ("Empty", "")],
        ),
        (b"GET / HTTP/1.1\nhost: fn\n\n", "GET", "/", "HTTP/1.1", [("host", "fn")]),  # bare LF ends lines too
        (b"\r\n\r\nGET / HTTP/1.1\r\nHost: fn\r\n\r\n", "GET", "/", "HTTP/1.1", [("Host", "fn")]),  # RFC 9112 2.2
        (b"GET / HTTP/1.0\r\n\r\n", "GET", "/", "HTTP/1.0", []),  # Host is HTTP/1.1's
        (b"GET / HTTP/1.7\r\nHost: fn\r\n\r\n", "GET", "/", "HTTP/1.1", [("Host", "fn")]),  # a later 1.x is 1.1
        (b"OPTIONS * HTTP/1.1\r\nHost: fn\r\n\r\n", "OPTIONS", "*", "HTTP/1.1", [("Host", "fn")]),
        (b"GET http://fn/p HTTP/1.1\r\nHost: fn\r\n\r\n", "GET", "http://fn/p", "HTTP/1.1", [("Host", "fn")]),
        (b"GET / HTTP/1.0\r\nX: caf\xe9 a:b\r\n\r\n", "GET", "/", "HTTP/1.0", [("X", "caf\xe9 a:b")]),  # obs-text
        (b"GET / HTTP/1.0\r\nA: 1\r\na: 2\r\n\r\nbody", "GET", "/", "HTTP/1.0", [("A", "1"), ("a", "2")]),
        (b"GET / HTTP/1.0\r\n" + b"X: 1\r\n" * 100 + b"\r\n", "GET", "/", "HTTP/1.0", [("X", "1")] * 100),
    ],
)
def test_a_request_head_is_read(data: bytes, method: str, target: str, version: str, fields: list) -> None:
    assert head(data) == faas_handler._Head(method, target, version, fields)


def test_a_client_that_closes_before_a_request_is_no_request() -> None:
    assert head(b"") is None
    assert head(b"\r\n") is None


@pytest.mark.parametrize(
    ("data", "status", "explain"),
    [
        (b"NONSENSE\r\n\r\n", "400 Bad Request", "Bad request line 'NONSENSE'"),
        (b"GET /\r\n\r\n", "400 Bad Request", "Bad request line"),  # HTTP/0.9 is not served
        (b"GET / HTTP/9.x\r\n\r\n", "400 Bad Request", "Bad request line"),
        (b"GET / HTTP/1.10\r\n\r\n", "400 Bad Request", "Bad request line"),
        (b"GET  / HTTP/1.1\r\n\r\n", "400 Bad Request", "Bad request line"),
        (b"GET / HTTP/1.1 \r\n\r\n", "400 Bad Request", "Bad request line"),
        (b"G(T / HTTP/1.1\r\n\r\n", "400 Bad Request", "Bad request line"),  # a method is a token
        (b"GET /a\x00b HTTP/1.1\r\n\r\n", "400 Bad Request", "Bad request line"),
        (b"GET /a\x7fb HTTP/1.1\r\n\r\n", "400 Bad Request", "Bad request line"),
        (b"GET / HTTP/2.0\r\n\r\n", "505 HTTP Version Not Supported", "HTTP/2.0 is not served here"),
        (b"GET / HTTP/0.9\r\n\r\n", "505 HTTP Version Not Supported", "HTTP/0.9"),
        (b"GET / HTTP/1.1", "400 Bad Request", "cut short"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", "400 Bad Request", "cut short at b''"),
        (b"GET / HTTP/1.1\r\nHost: x", "400 Bad Request", "cut short at b'Host: x'"),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "400 Bad Request", "Bad header line 'Host x'"),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "400 Bad Request", "Bad header line"),  # RFC 9112 5.1
        (b"GET / HTTP/1.1\r\n: x\r\n\r\n", "400 Bad Request", "Bad header line"),
        (b"GET / HTTP/1.1\r\nX(y): 1\r\n\r\n", "400 Bad Request", "Bad header line"),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "400 Bad Request", "Bad header line"),  # a bare CR
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "400 Bad Request", "Bad header line"),
        (b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n", "400 Bad Request", "Bad header line"),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", "400 Bad Request", "Folded header line ' folded'"),
        (b"GET / HTTP/1.1\r\nX: a\r\n\tfolded\r\n\r\n", "400 Bad Request", "Folded header line"),
        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", "414 URI Too Long", f"over {MAX_LINE} bytes"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_LINE + b"\r\n\r\n", "431 Request Header Fields Too Large", "line over"),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", "431 Request Header Fields Too Large", "than 100"),
    ],
)
def test_a_malformed_head_is_refused_with_its_reason(data: bytes, status: str, explain: str) -> None:
    with pytest.raises(faas_handler._Refused) as refused:
        head(data)
    assert refused.value.status == status and explain in refused.value.explain


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\n", 400),  # the client stopped inside the head
    ],
)
def test_a_refusal_answers_with_its_reason_and_closes(tmp_path: Path, request_bytes: bytes, status: int) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_eof(sock)
    response_head, _, body = answer.partition(b"\r\n\r\n")
    assert response_head.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nConnection: close" in response_head and b"\r\nContent-Type: text/plain" in response_head
    assert body and b"Content-Length: %d\r\n" % len(body) in response_head


def test_empty_lines_between_requests_are_ignored(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/first", body=b"x")
        assert conn.getresponse().read()
        sock.sendall(b"\r\n")  # as some clients send after a body
        conn.request("GET", "/second")
        response = conn.getresponse()
        assert response.status == 200 and b'"PATH_INFO": "/second"' in response.read()


def test_connection_close_from_the_client_is_the_last_response(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: fn\r\nConnection: keep-alive, close\r\n\r\n")
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: fn\r\n\r\n")
        answer = read_to_eof(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b"\r\nConnection: close\r\n" in answer


def test_a_chunked_request_that_also_has_a_length_is_answered_then_the_connection_closed(tmp_path: Path) -> None:
    smuggler = b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    smuggler += b"2\r\nhi\r\n0\r\n\r\n"
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(smuggler + b"GET /hidden HTTP/1.1\r\nHost: fn\r\n\r\n")
        answer = read_to_eof(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b'"body": "hi"' in answer and b"/hidden" not in answer


def test_repeated_headers_reach_the_environ_joined_by_commas(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: fn\r\nAccept: a\r\naccept: b\r\nConnection: close\r\n\r\n")
        assert b'"HTTP_ACCEPT": "a,b"' in read_to_eof(sock)


PERCENT = ["", "plain", "/a%20b", "%C3%A9t%C3%A9", "%e9", "%", "%2", "%zz%41", "a%2Fb%2f", "%F0%9F%98%80x", "é%C3%A9"]


@pytest.mark.parametrize("text", PERCENT)
@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
def test_percent_decoding_is_urllibs(text: str, encoding: str) -> None:
    assert faas_handler._unquote(text, encoding) == urllib.parse.unquote(text, encoding)


@pytest.mark.parametrize(
    "query", ["", "a=1", "a=1&a=2&b", "a=&=b&&c=%20+d", "x=%C3%A9&y=%E9", "k+e+y=v+a+l", "a=1;b=2", "=&=", "a==b"]
)
def test_query_parsing_is_urllibs(query: str) -> None:
    assert faas_handler._query_pairs(query) == urllib.parse.parse_qsl(query, keep_blank_values=True)


def exchange(tmp_path: Path, app: Callable[..., Any], request_bytes: bytes) -> tuple[dict[str, str], bytes, bytes]:
    """Send ``request_bytes`` on a handed-over connection, half-close, read to the end; return the
    first response's header fields (names lower-cased; a repeated name keeps its last value), its
    status line, and everything after its head."""
    with handed_over(tmp_path, in_thread(app)) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_eof(sock)
    response_head, _, rest = answer.partition(b"\r\n\r\n")
    status_line, *lines = response_head.decode("latin-1").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return fields, status_line.encode(), rest


@pytest.mark.parametrize(
    ("target", "path", "query", "host"),
    [
        ("http://fn:8080/get?a=1", "/get", "a=1", "fn:8080"),
        ("http://fn", "/", "", "fn"),
        ("http://fn?a=1", "/", "a=1", "fn"),
        ("HTTPS://fn/a%20b/", "/a b/", "", "fn"),
        ("http://user@fn/p?q=http://x/y", "/p", "q=http://x/y", "user@fn"),
        ("/http://fn/p", "/http://fn/p", "", "sent"),  # origin-form whose path looks like a URL
    ],
)
def test_an_absolute_form_target_is_served_by_its_path(
    tmp_path: Path, target: str, path: str, query: str, host: str
) -> None:
    request = f"GET {target} HTTP/1.1\r\nHost: sent\r\nConnection: close\r\n\r\n".encode()
    fields, status, body = exchange(tmp_path, echo, request)
    seen = json.loads(body)
    assert status == b"HTTP/1.1 200 OK"
    # RFC 9112 3.2.2: the target's authority names the host, whatever the Host field says.
    assert (seen["PATH_INFO"], seen["QUERY_STRING"], seen["HTTP_HOST"]) == (path, query, host)
    assert seen["REQUEST_URI"] == target


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET http://fn/ HTTP/1.1\r\n\r\n",  # the absolute-form does not stand in for Host
        b"GET / HTTP/1.1\r\nHost: fn\r\nHost: fn\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
)
def test_a_request_without_one_host_is_refused(tmp_path: Path, request_bytes: bytes) -> None:
    fields, status, body = exchange(tmp_path, echo, request_bytes + b"GET / HTTP/1.1\r\nHost: fn\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request" and fields["connection"] == "close"
    assert b"Host fields" in body and b"HTTP/1.1 200" not in body


def test_an_http_1_0_request_needs_no_host(tmp_path: Path) -> None:
    fields, status, body = exchange(tmp_path, echo, b"GET /old HTTP/1.0\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK" and json.loads(body)["PATH_INFO"] == "/old"


class Streamed(tuple):
    """Body parts a WSGI app yields one by one, so that the server cannot know its length ahead."""


def replying(status: str, headers: list[tuple[str, str]], body: Iterable[bytes]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that answers every request alike."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, list(headers))
        return (part for part in body) if isinstance(body, Streamed) else body

    return app


# (status, the app's headers, its body, the request's method) -> the framing fields of the response
FRAMING = [
    ("204 No Content", [], [], "GET", {}),
    ("204 No Content", [("Content-Length", "0")], [], "GET", {}),  # RFC 9110 8.6: MUST NOT, even from the app
    ("304 Not Modified", [], [], "GET", {}),
    ("304 Not Modified", [("Content-Length", "1234")], [], "GET", {"content-length": "1234"}),  # GET's length
    ("200 OK", [], [b"hello"], "HEAD", {"content-length": "5"}),  # the body the app gave anyway
    ("200 OK", [], (), "HEAD", {}),  # an empty body is a HEAD's left out (Werkzeug): GET's length is unknown
    ("200 OK", [], Streamed([b"a", b"b"]), "HEAD", {}),
    ("200 OK", [("Content-Length", "7")], (), "HEAD", {"content-length": "7"}),
    ("200 OK", [], [], "GET", {"content-length": "0"}),
    ("200 OK", [], Streamed(), "GET", {"content-length": "0"}),  # ended before its first byte
    ("200 OK", [], Streamed([b"a"]), "GET", {"transfer-encoding": "chunked"}),
]


@pytest.mark.parametrize(("status", "headers", "body", "method", "framing"), FRAMING)
def test_the_framing_of_a_response_is_never_forbidden_or_false(
    tmp_path: Path, status: str, headers: list[tuple[str, str]], body: Any, method: str, framing: dict[str, str]
) -> None:
    request = f"{method} / HTTP/1.1\r\nHost: fn\r\n\r\n".encode()
    with handed_over(tmp_path, in_thread(replying(status, headers, body))) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        response.read()
        said = {name: response.getheader(name) for name in ("content-length", "transfer-encoding")}
        assert {name: value for name, value in said.items() if value is not None} == framing
        assert response.getheader("Connection") is None, "the connection stays open"
        sock.sendall(request)  # and carries the next request, framed as the first said
        second = http.client.HTTPResponse(sock, method=method)
        second.begin()
        assert second.status == int(status[:3])


def ignoring_the_body(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("413 Content Too Large", [("Content-Type", "text/plain")])
    return [b"too large\n"]


@pytest.mark.parametrize("unread", [faas_handler.MAX_DRAIN + 1, 50 * 1024 * 1024])
def test_a_body_left_unread_past_the_drain_limit_is_announced_as_the_end(tmp_path: Path, unread: int) -> None:
    with handed_over(tmp_path, in_thread(ignoring_the_body)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Length: %d\r\n\r\nfirst bytes" % unread)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        assert (response.status, response.read()) == (413, b"too large\n")
        assert response.getheader("Connection") == "close", "the client must not send another request here"
        assert sock.recv(1) == b"", "and the connection ends"


def test_a_body_left_unread_within_the_drain_limit_keeps_the_connection(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(ignoring_the_body)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/", body=b"x" * faas_handler.MAX_DRAIN)
        response = conn.getresponse()
        assert (response.read(), response.getheader("Connection")) == (b"too large\n", None)
        conn.request("POST", "/", body=b"x")
        assert conn.getresponse().status == 413
