"""The SDK's own HTTP/1.1 request parser beside h11's, on one corpus of valid and hostile input.

Each side reads the same bytes as a server would and says, request by request, what it framed:
the request line, the fields, the body, whether the connection may carry another; and how the
stream ended: cleanly, closed after a request, or refused. Both must say the same, except where
the difference is deliberate: each such case names the words of handlers/README.md that give
its reason, and must still differ (a difference that went away is a table to update, not a pass).
"""

from __future__ import annotations

import io
from typing import Any

import h11
import pytest

from tests.unit.handlers.harness import HANDLERS, faas_handler

FEED = 1024  # h11 gets the bytes as a socket would give them: its limits apply to a head in the making

Outcome = list[Any]  # ("request", method, target, version, fields, body) items, then "end", "close" or "refused"


def sdk_reads(data: bytes) -> Outcome:
    """What ``_Connection._serve_one`` frames, request after request."""
    rfile = io.BytesIO(data)
    outcome: Outcome = []
    while True:
        try:
            head = faas_handler._read_head(rfile)
            if head is None:
                return [*outcome, "end"]
            length = faas_handler._body_length(head)
            body = faas_handler._read_chunked(rfile) if length is None else rfile.read(length)
        except faas_handler._Refused:
            return [*outcome, "refused"]
        if length is not None and len(body) < length:
            return [*outcome, "refused"]  # the client stopped inside the body
        outcome.append(("request", head.method, head.target, head.version, comparable(head.fields), body))
        if not faas_handler._keep_alive(head):
            return [*outcome, "close"]


def h11_reads(data: bytes) -> Outcome:
    """What an h11 server connection frames, answering each request as it ends."""
    conn = h11.Connection(h11.SERVER)
    outcome: Outcome = []
    fed, started, body = 0, None, b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return [*outcome, "refused"]
        if event is h11.NEED_DATA:
            conn.receive_data(data[fed : fed + FEED])  # b"" at the end: EOF
            fed += FEED
        elif isinstance(event, h11.Request):
            started, body = event, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert started is not None
            fields = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in started.headers.raw_items()]
            outcome.append(
                (
                    "request",
                    started.method.decode(),
                    started.target.decode("latin-1"),
                    version(started),
                    comparable(fields),
                    body,
                )
            )
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return [*outcome, "close"]
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return [*outcome, "end"]
        else:
            raise AssertionError(f"unexpected h11 event {event!r}")


def version(request: h11.Request) -> str:
    """h11's version as the SDK names it: a later HTTP/1.x is 1.1 (RFC 9110 2.5)."""
    major, _, minor = request.http_version.decode().partition(".")
    return f"HTTP/{major}.{'0' if minor == '0' else '1'}" if major == "1" else f"HTTP/{major}.{minor}"


def comparable(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Fields with names lower-cased; the framing fields leave, their effect is the body."""
    return [
        (name.lower(), value) for name, value in fields if name.lower() not in ("content-length", "transfer-encoding")
    ]


def request(*lines: str, body: bytes = b"") -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


GET = request("GET / HTTP/1.1", "Host: fn")
CHUNKED = "POST /up HTTP/1.1", "Host: fn", "Transfer-Encoding: chunked"

CORPUS: dict[str, bytes] = {
    # Valid: what clients send.
    "get": GET,
    "get with fields": request("GET /a%20b?x=1 HTTP/1.1", "Host: fn", "Accept: */*", "X-Pad:  both ends \t", "Empty:"),
    "http/1.0": request("GET / HTTP/1.0"),
    "http/1.0 keep-alive asked": request("GET / HTTP/1.0", "Connection: keep-alive"),
    "a later 1.x": request("GET / HTTP/1.7", "Host: fn"),
    "connection close": request("GET / HTTP/1.1", "Host: fn", "Connection: keep-alive, Close") + GET,
    "post with a length": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 5", body=b"hello"),
    "options *": request("OPTIONS * HTTP/1.1", "Host: fn"),
    "absolute-form": request("GET http://fn:8080/get?a=1 HTTP/1.1", "Host: fn"),
    "obs-text in a value": request("GET / HTTP/1.1", "Host: fn", "X: caf\xe9"),
    "repeated fields": request("GET / HTTP/1.1", "Host: fn", "A: 1", "a: 2"),
    "a lower-case method": request("get / HTTP/1.1", "Host: fn"),
    "header names with _": request("GET / HTTP/1.1", "Host: fn", "X_Y: 1"),
    # Pipelined.
    "pipelined": GET + request("POST /2 HTTP/1.1", "Host: fn", "Content-Length: 3", body=b"abc") + GET,
    "pipelined after chunked": request(*CHUNKED, body=b"3\r\nabc\r\n0\r\n\r\n") + GET,
    "pipelined then garbage": GET + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "pipelined then cut short": GET + b"GET / HT",
    # Content-Length.
    "two equal lengths": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 3", "Content-Length: 3", body=b"abc"),
    "a list of equal lengths": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 3, 3", body=b"abc"),
    "two different lengths": request(
        "POST / HTTP/1.1", "Host: fn", "Content-Length: 3", "Content-Length: 4", body=b"abcd"
    ),
    "a list of different lengths": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 3, 4", body=b"abcd"),
    "a signed length": request("POST / HTTP/1.1", "Host: fn", "Content-Length: +3", body=b"abc"),
    "a negative length": request("POST / HTTP/1.1", "Host: fn", "Content-Length: -1"),
    "a hex length": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 0x3", body=b"abc"),
    "an empty length": request("POST / HTTP/1.1", "Host: fn", "Content-Length:"),
    "a length with leading zeros": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 003", body=b"abc"),
    "a body cut short": request("POST / HTTP/1.1", "Host: fn", "Content-Length: 5", body=b"ab"),
    # Chunked.
    "chunked": request(*CHUNKED, body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "chunked, upper-case hex": request(*CHUNKED, body=b"A\r\n0123456789\r\n0\r\n\r\n"),
    "chunked, leading zeros": request(*CHUNKED, body=b"0005\r\nhello\r\n000\r\n\r\n"),
    "chunked, extensions": request(*CHUNKED, body=b"5;name=value;x\r\nhello\r\n0;last\r\n\r\n"),
    "chunked, whitespace after the size": request(*CHUNKED, body=b"5 \r\nhello\r\n0\r\n\r\n"),
    "chunked, whitespace before an extension": request(*CHUNKED, body=b"5 ;x=1\r\nhello\r\n0\r\n\r\n"),
    "chunked, trailers": request(*CHUNKED, body=b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n"),
    "chunked, a bad trailer": request(*CHUNKED, body=b"5\r\nhello\r\n0\r\nX-Sum 1\r\n\r\n"),
    "chunked, a folded trailer": request(*CHUNKED, body=b"5\r\nhello\r\n0\r\nX: 1\r\n folded\r\n\r\n"),
    "chunked, trailers cut short": request(*CHUNKED, body=b"5\r\nhello\r\n0\r\n"),
    "chunked, case and spaces": request(
        "POST / HTTP/1.1", "Host: fn", "Transfer-Encoding:  Chunked ", body=b"0\r\n\r\n"
    ),
    "chunked, a chunk longer than said": request(*CHUNKED, body=b"2\r\nabc\r\n0\r\n\r\n"),
    "chunked, a chunk cut short": request(*CHUNKED, body=b"5\r\nhel"),
    "chunked, no last chunk": request(*CHUNKED, body=b"5\r\nhello\r\n"),
    "chunked, a size not hex": request(*CHUNKED, body=b"xyz\r\nhello\r\n0\r\n\r\n"),
    "chunked, a signed size": request(*CHUNKED, body=b"-1\r\nhello\r\n0\r\n\r\n"),
    "chunked, a 0x size": request(*CHUNKED, body=b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunked, an empty size": request(*CHUNKED, body=b"\r\nhello\r\n0\r\n\r\n"),
    "chunked, whitespace before the size": request(*CHUNKED, body=b" 5\r\nhello\r\n0\r\n\r\n"),
    "chunked, a size of 12 digits": request(*CHUNKED, body=b"000000000005\r\nhello\r\n0\r\n\r\n"),
    "chunked, a size of 21 digits": request(*CHUNKED, body=b"000000000000000000005\r\nhello\r\n0\r\n\r\n"),
    "chunked twice": request(*CHUNKED, "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "chunked, listed twice": request(
        "POST / HTTP/1.1", "Host: fn", "Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"
    ),
    "gzip then chunked": request("POST / HTTP/1.1", "Host: fn", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "identity": request("POST / HTTP/1.1", "Host: fn", "Transfer-Encoding: identity", body=b"0\r\n\r\n"),
    "chunked in http/1.0": request("POST / HTTP/1.0", "Transfer-Encoding: chunked", body=b"2\r\nhi\r\n0\r\n\r\n"),
    "chunked with a length": request(*CHUNKED, "Content-Length: 4", body=b"2\r\nhi\r\n0\r\n\r\n") + GET,
    # Obsolete line folding, bare LF, bare CR.
    "obs-fold": request("GET / HTTP/1.1", "Host: fn", "X: 1", " folded"),
    "obs-fold by a tab": request("GET / HTTP/1.1", "Host: fn", "X: 1", "\tfolded"),
    "obs-fold first": request("GET / HTTP/1.1", " folded", "Host: fn"),
    "bare LF": b"GET / HTTP/1.1\nHost: fn\nX: 1\n\n",
    "bare LF after CRLF lines": b"GET / HTTP/1.1\r\nHost: fn\n\r\n",
    "bare CR in a value": request("GET / HTTP/1.1", "Host: fn", "X: a\rb"),
    "bare CR ending the request line": b"GET / HTTP/1.1\rHost: fn\r\n\r\n",
    "empty lines before the request": b"\r\n\n" + GET,
    "empty lines between requests": GET + b"\r\n" + GET,
    "chunked, bare LF after the size": request(*CHUNKED, body=b"5\nhello\r\n0\r\n\r\n"),
    "chunked, bare LF after the data": request(*CHUNKED, body=b"5\r\nhello\n0\r\n\r\n"),
    # Request lines.
    "two spaces": request("GET  / HTTP/1.1", "Host: fn"),
    "a trailing space": request("GET / HTTP/1.1 ", "Host: fn"),
    "no version": request("GET /", "Host: fn"),
    "lower-case http": request("GET / http/1.1", "Host: fn"),
    "http/1.10": request("GET / HTTP/1.10", "Host: fn"),
    "http/2.0": request("GET / HTTP/2.0", "Host: fn"),
    "http/0.9": request("GET / HTTP/0.9", "Host: fn"),
    "a method not a token": request("G@T / HTTP/1.1", "Host: fn"),
    "NUL in the target": request("GET /a\x00b HTTP/1.1", "Host: fn"),
    "DEL in the target": request("GET /a\x7fb HTTP/1.1", "Host: fn"),
    "obs-text in the target": request("GET /caf\xe9 HTTP/1.1", "Host: fn"),
    "a head cut short": b"GET / HTTP/1.1\r\nHost: fn\r\n",
    "a request line cut short": b"GET / HTTP/1.1",
    "nothing": b"",
    # Header lines.
    "space before the colon": request("GET / HTTP/1.1", "Host : fn"),
    "no colon": request("GET / HTTP/1.1", "Host: fn", "X"),
    "an empty name": request("GET / HTTP/1.1", "Host: fn", ": x"),
    "a name not a token": request("GET / HTTP/1.1", "Host: fn", "X(y): 1"),
    "NUL in a value": request("GET / HTTP/1.1", "Host: fn", "X: a\x00b"),
    "ESC in a value": request("GET / HTTP/1.1", "Host: fn", "X: a\x1bb"),
    "DEL in a value": request("GET / HTTP/1.1", "Host: fn", "X: a\x7fb"),
    # Host (RFC 9112 3.2).
    "no host": request("GET / HTTP/1.1"),
    "two hosts": request("GET / HTTP/1.1", "Host: fn", "host: fn"),
    "two hosts in http/1.0": request("GET / HTTP/1.0", "Host: a", "Host: b"),
    "absolute-form without host": request("GET http://fn/ HTTP/1.1"),
    # Huge heads.
    "a request line over 64 KiB": request("GET /" + "a" * 70_000 + " HTTP/1.1", "Host: fn"),
    "a field line over 64 KiB": request("GET / HTTP/1.1", "Host: fn", "X: " + "a" * 70_000),
    "a head of 30 KiB": request("GET / HTTP/1.1", "Host: fn", *[f"X-{n}: {'a' * 500}" for n in range(60)]),
    "101 fields": request("GET / HTTP/1.1", "Host: fn", *["X: 1"] * 100),
    "a head that never ends": b"GET / HTTP/1.1\r\nHost: fn\r\n" + b"X: 1\r\n" * 50_000,
}

# Differences kept on purpose: the words of handlers/README.md that say why.
DELIBERATE = {
    "empty lines before the request": "empty lines before a request line are skipped",
    "empty lines between requests": "empty lines before a request line are skipped",
    "chunked with a length": "closes the connection after a request with both",
    "obs-fold": "folded lines are refused",
    "obs-fold by a tab": "folded lines are refused",
    "chunked, a folded trailer": "folded lines are refused",
    "ESC in a value": "control characters in a field value are refused",
    "DEL in a value": "control characters in a field value are refused",
    "obs-text in the target": "bytes 0x80 to 0xFF in a request target are accepted",
    "http/2.0": "a version other than HTTP/1.x gets 505",
    "http/0.9": "a version other than HTTP/1.x gets 505",
    "chunked, bare LF after the size": "a bare LF ends every line",
    "chunked, bare LF after the data": "a bare LF ends every line",
    "chunked, whitespace before an extension": "whitespace before the `;` of a chunk extension is accepted",
    "a head of 30 KiB": "h11's limit is 16 KiB for the whole head",
    "101 fields": "h11's limit is 16 KiB for the whole head",
}


@pytest.mark.parametrize("name", CORPUS)
def test_the_sdk_frames_each_request_as_h11_does(name: str) -> None:
    sdk, reference = sdk_reads(CORPUS[name]), h11_reads(CORPUS[name])
    if name in DELIBERATE:
        assert sdk != reference, f"{name!r} is framed alike now: take it out of DELIBERATE and the README"
    else:
        assert sdk == reference


@pytest.mark.parametrize("name", DELIBERATE)
def test_each_deliberate_difference_is_documented(name: str) -> None:
    readme = " ".join((HANDLERS / "README.md").read_text().lower().split())
    assert DELIBERATE[name].lower() in readme


def test_the_corpus_ends_every_way_a_stream_can() -> None:
    endings = {sdk_reads(data)[-1] for data in CORPUS.values()}
    requests = sum(1 for data in CORPUS.values() for item in sdk_reads(data) if isinstance(item, tuple))
    assert endings == {"end", "close", "refused"} and requests > 40
