"""ASGI apps under serve(), handed a real socket (see harness.py).

The apps here are written against the ASGI 3 spec alone, so the bridge is tested without any
framework; the Starlette example runs on the real library in tests/integration/test_handlers.py.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.handlers.harness import faas_handler, handed_over, http_on, in_thread, read_to_eof

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def respond(send: Send, body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> list[bytes]:
    """The request body as the app received it, one item per http.request message."""
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        parts.append(message["body"])
        if not message["more_body"]:
            return parts


async def wait_for(gate: threading.Event) -> None:
    """Park the app's coroutine until the test, on its own thread, opens ``gate``."""
    assert await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)


async def echo(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"no {scope['type']} here")  # declines the lifespan protocol
    parts = await read_body(receive)
    seen = {
        key: value.decode("latin-1") if isinstance(value, bytes) else value
        for key, value in scope.items()
        if key not in ("headers", "state")
    }
    seen["headers"] = [[name.decode(), value.decode()] for name, value in scope["headers"]]
    seen["body_messages"] = len(parts)
    seen["body"] = b"".join(parts).decode()
    await respond(send, json.dumps(seen).encode(), headers=[(b"content-type", b"application/json")])


def test_scope_and_a_body_in_several_messages(tmp_path: Path) -> None:
    body = "x" * (faas_handler.ASGI_READ * 2 + 10)
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/a%20b/%C3%A9?x=1&y=%20", body=body, headers={"X-Test": "yes"})
        response = conn.getresponse()
        seen = json.loads(response.read())
        server, client = sock.getpeername(), sock.getsockname()
    assert (response.status, response.getheader("Content-Type")) == (200, "application/json")
    assert seen["body"] == body and seen["body_messages"] == 3
    assert {key: seen[key] for key in ("type", "method", "http_version", "scheme", "root_path")} == {
        "type": "http",
        "method": "POST",
        "http_version": "1.1",
        "scheme": "http",
        "root_path": "",
    }
    assert (seen["path"], seen["raw_path"], seen["query_string"]) == ("/a b/é", "/a%20b/%C3%A9", "x=1&y=%20")
    assert ["x-test", "yes"] in seen["headers"] and ["content-length", str(len(body))] in seen["headers"]
    assert (seen["client"], seen["server"]) == ([client[0], client[1]], [server[0], server[1]])
    assert seen["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert seen["faas.metadata"]["id"] == "req-1"


def test_an_absolute_form_target_gives_the_scope_its_path_and_host(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        sock.sendall(b"GET http://fn:8080/a%20b?x=1 HTTP/1.1\r\nHost: sent\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        seen = json.loads(response.read())
    assert (seen["path"], seen["raw_path"], seen["query_string"]) == ("/a b", "/a%20b", "x=1")
    assert ["host", "fn:8080"] in seen["headers"] and ["host", "sent"] not in seen["headers"]


def test_a_prefix_in_the_metadata_is_the_root_path_and_stays_in_the_path(tmp_path: Path) -> None:
    """ASGI's root_path is WSGI's SCRIPT_NAME, and path still holds it (as asgiref's WSGI adapter reads it)."""
    with handed_over(tmp_path, in_thread(echo), prefix="/function/fn") as sock:
        conn = http_on(sock)
        seen = []
        for target in ["/function/fn/a%20b?x=1", "/elsewhere"]:
            conn.request("GET", target)
            answer = json.loads(conn.getresponse().read())
            seen.append((answer["root_path"], answer["path"], answer["raw_path"]))
    assert seen == [("/function/fn", "/function/fn/a b", "/function/fn/a%20b"), ("", "/elsewhere", "/elsewhere")]


def test_lifespan_runs_once_around_the_connection_and_shares_its_state(tmp_path: Path) -> None:
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["greeting"] = "hi"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        events.append("request")
        await respond(send, scope["state"]["greeting"].encode())

    with handed_over(tmp_path, in_thread(app)) as sock:
        conn = http_on(sock)
        for _ in range(2):
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"hi"
    assert events == ["lifespan.startup", "request", "request", "lifespan.shutdown"]


def test_an_app_that_declines_the_lifespan_still_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with handed_over(tmp_path, in_thread(echo)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
    assert "ASGI lifespan declined: ValueError('no lifespan here')" in capsys.readouterr().err


def test_failed_startup_ends_the_handler_before_it_takes_a_connection(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    control_path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX) as control:
        control.bind(str(control_path))
        control.listen(1)
        control.setblocking(False)
        with pytest.raises(faas_handler.LifespanError, match="startup failed: no database"):
            in_thread(app)(str(control_path))()
        with pytest.raises(BlockingIOError):
            control.accept()  # it never connected: the daemon answers 502 for it


def test_each_body_message_is_sent_as_it_comes(tmp_path: Path) -> None:
    gate = threading.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await wait_for(gate)
        await send({"type": "http.response.body", "body": b"second", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with handed_over(tmp_path, in_thread(app, style="asgi")) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read(5) == b"first"  # while the app is parked before "second"
        gate.set()
        assert response.read() == b"second"


def test_the_response_ends_at_its_last_message_while_the_app_goes_on(tmp_path: Path) -> None:
    gate, events = threading.Event(), []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await wait_for(gate)  # a background task, as Starlette runs them after the response
        events.append("background")

    with handed_over(tmp_path, in_thread(app, style="asgi")) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"done"  # the chunked body ended: the app is still parked
        assert events == []
        gate.set()
    assert events == ["background"], "serve() waited for the app before the lifespan shutdown"


def test_receive_after_the_body_waits_for_the_end_of_the_response(tmp_path: Path) -> None:
    """Apps written for ASGI before 2.4 (Starlette < 0.38) stop streaming at http.disconnect."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await read_body(receive)
        disconnect = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"b", b"c"):
            await asyncio.sleep(0.02)
            if disconnect.done():
                return  # would cut the response short: the test below sees it
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        assert await disconnect == {"type": "http.disconnect"}

    with handed_over(tmp_path, in_thread(app)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/", body=b"ping")
        assert conn.getresponse().read() == b"abc"


@pytest.mark.parametrize(
    ("failure", "logged"),
    [
        ("raise", "ZeroDivisionError"),
        ("return", "the ASGI app returned without sending a response"),
        ("body first", "unexpected ASGI message 'http.response.body' before start"),
    ],
)
def test_an_app_that_fails_before_its_response_gets_its_client_a_500(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failure: str, logged: str
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if failure == "raise":
            raise ZeroDivisionError("raised by the app")
        if failure == "body first":
            await send({"type": "http.response.body", "body": b"x"})

    with handed_over(tmp_path, in_thread(app)) as sock:
        conn = http_on(sock)
        for _ in range(2):  # the connection stays usable
            conn.request("GET", "/")
            response = conn.getresponse()
            assert (response.status, response.read()[:21]) == (500, b"A server error occurr")
    assert logged in capsys.readouterr().err


def test_failure_mid_stream_cuts_the_connection(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("mid-stream")

    with handed_over(tmp_path, in_thread(app)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = read_to_eof(sock)
    assert received.endswith(b"\r\n\r\n4\r\npart\r\n"), "no last chunk: the client sees a broken response"


def test_a_client_gone_mid_stream_shows_in_send_as_oserror(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.01)
        except OSError as exc:
            errors.append(exc)

    with handed_over(tmp_path, in_thread(app)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read(5) == b"tick\n"
    assert len(errors) == 1, "serve() returned once the app had seen the client go"


def test_hop_by_hop_headers_from_the_app_are_left_to_the_server(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await respond(send, b"ok", headers=[(b"connection", b"keep-alive"), (b"x-kept", b"1")])

    with handed_over(tmp_path, in_thread(app)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.read(), response.getheader("Connection"), response.getheader("X-Kept")) == (b"ok", None, "1")


def test_a_body_the_app_reads_only_after_its_response_is_left_to_the_connection(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await respond(send, b"answered")
        received.append(await receive())  # the connection reads on: the body is no longer the app's

    with handed_over(tmp_path, in_thread(app, style="asgi")) as sock:
        conn = http_on(sock)
        for _ in range(2):
            conn.request("POST", "/", body=b"x" * 300_000)
            assert conn.getresponse().read() == b"answered"
    assert received == [{"type": "http.disconnect"}] * 2
