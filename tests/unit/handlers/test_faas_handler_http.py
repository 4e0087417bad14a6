"""The SDK's own HTTP/1.1 request reading (RFC 9112): the parser on its own, fed tables of good and
hostile input, then what the connection does with it, on a real socket (see harness.py)."""

from __future__ import annotations

import io
import socket
import urllib.parse
from pathlib import Path

import pytest

from tests.unit.handlers.harness import faas_handler, handed_over, http_on, in_thread, read_to_eof
from tests.unit.handlers.test_faas_handler import echo

MAX_LINE = faas_handler.MAX_LINE


def head(data: bytes) -> object:
    return faas_handler._read_head(io.BytesIO(data))


@pytest.mark.parametrize(
    ("data", "method", "target", "version", "fields"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "GET", "/", "HTTP/1.1", []),
        (
            b"POST /a%20b?x=1 HTTP/1.1\r\nHost: fn\r\nX-Pad:  both ends \t\r\nEmpty:\r\n\r\n",
            "POST",
            "/a%20b?x=1",
            "HTTP/1.1",
            [("Host", "fn"), ("X-Pad", "both ends"), ("Empty", "")],
        ),
        (b"GET / HTTP/1.1\nA: 1\n\n", "GET", "/", "HTTP/1.1", [("A", "1")]),  # bare LF ends lines too
        (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", "GET", "/", "HTTP/1.1", []),  # RFC 9112 2.2: empty lines first
        (b"GET / HTTP/1.0\r\n\r\n", "GET", "/", "HTTP/1.0", []),
        (b"GET / HTTP/1.7\r\n\r\n", "GET", "/", "HTTP/1.1", []),  # a later 1.x is read as 1.1
        (b"OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS", "*", "HTTP/1.1", []),
        (b"GET http://fn/p HTTP/1.1\r\n\r\n", "GET", "http://fn/p", "HTTP/1.1", []),
        (b"GET / HTTP/1.1\r\nX: caf\xe9 a:b\r\n\r\n", "GET", "/", "HTTP/1.1", [("X", "caf\xe9 a:b")]),  # obs-text
        (b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\nbody", "GET", "/", "HTTP/1.1", [("A", "1"), ("a", "2")]),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 100 + b"\r\n", "GET", "/", "HTTP/1.1", [("X", "1")] * 100),
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
        sock.sendall(b"GET /1 HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        answer = read_to_eof(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b"\r\nConnection: close\r\n" in answer


def test_a_chunked_request_that_also_has_a_length_is_answered_then_the_connection_closed(tmp_path: Path) -> None:
    smuggler = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(smuggler + b"GET /hidden HTTP/1.1\r\n\r\n")
        answer = read_to_eof(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b'"body": "hi"' in answer and b"/hidden" not in answer


def test_repeated_headers_reach_the_environ_joined_by_commas(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nAccept: a\r\naccept: b\r\nConnection: close\r\n\r\n")
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
