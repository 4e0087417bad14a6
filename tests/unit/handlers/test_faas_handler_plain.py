"""Plain ``handle(request)`` handlers under serve(), handed a real socket; how serve() tells styles apart."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.handlers.harness import faas_handler, handed_over, http_on, in_thread

Request = faas_handler.Request
Response = faas_handler.Response


def test_the_request_has_method_path_query_headers_and_body(tmp_path: Path) -> None:
    seen: list[Any] = []

    def handle(request: Any) -> str:
        seen.append(request)
        return "ok"

    with handed_over(tmp_path, in_thread(handle)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/caf%C3%A9%20b?x=1&x=2&empty=", body=b'{"n": 1}', headers={"X-Test": "yes"})
        assert conn.getresponse().read() == b"ok"
    (request,) = seen
    assert (request.method, request.path, request.query, request.query_string) == (
        "POST",
        "/café b",
        {"x": "1", "empty": ""},
        "x=1&x=2&empty=",
    )
    assert request.headers["x-test"] == "yes" and request.headers.get("Content-Length") == "8"
    assert (request.body, request.text(), request.json()) == (b'{"n": 1}', '{"n": 1}', {"n": 1})
    assert request.metadata["id"] == "req-1"


RETURNS = [
    ("text", "hello", 200, "text/plain; charset=utf-8", b"hello"),
    ("bytes", b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
    ("dict", {"a": [1, 2]}, 200, "application/json", b'{"a": [1, 2]}'),
    ("list", [1, "x"], 200, "application/json", b'[1, "x"]'),
    ("none", None, 204, None, b""),
    ("empty", "", 200, None, b""),
    ("tuple", (201, {"id": 7}), 201, "application/json", b'{"id": 7}'),
    ("with-headers", (404, "gone", {"X-Why": "moved"}), 404, "text/plain; charset=utf-8", b"gone"),
    ("response", Response("<p>", status=418, content_type="text/html"), 418, "text/html", b"<p>"),
    ("unnamed-status", Response("odd", status=599), 599, "text/plain; charset=utf-8", b"odd"),
    ("stream", Response(iter(["a", b"b", "c"])), 200, None, b"abc"),
]


def test_each_kind_of_return_value_becomes_its_response(tmp_path: Path) -> None:
    returns = {name: value for name, value, *_ in RETURNS}
    with handed_over(tmp_path, in_thread(lambda request: returns[request.path[1:]])) as sock:
        conn = http_on(sock)  # one connection: every response is framed so the next can follow
        for name, _, status, content_type, body in RETURNS:
            conn.request("GET", f"/{name}")
            response = conn.getresponse()
            assert (response.status, response.getheader("Content-Type"), response.read()) == (
                status,
                content_type,
                body,
            ), name
            if name == "with-headers":
                assert response.getheader("X-Why") == "moved"
            if name == "stream":
                assert response.getheader("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize(
    ("handle", "logged"),
    [
        (lambda request: {1, 2}, "a plain handler returned set; return str, bytes, dict, list"),
        (lambda request: request.json(), "JSONDecodeError"),
    ],
)
def test_a_handler_that_fails_gets_its_client_a_500(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], handle: Callable[[Any], Any], logged: str
) -> None:
    with handed_over(tmp_path, in_thread(handle)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/", body=b"not json")
        response = conn.getresponse()
        assert (response.status, response.read()[:21]) == (500, b"A server error occurr")
    assert logged in capsys.readouterr().err


def test_a_response_object_is_also_a_wsgi_app(tmp_path: Path) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        cookies = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        return Response({"path": environ["PATH_INFO"]}, status=202, headers=cookies)(environ, start_response)

    with handed_over(tmp_path, in_thread(app)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/w")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (202, {"path": "/w"})
        assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]


class AsgiApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class WsgiApp:
    def __call__(self, environ: Any, start_response: Any) -> Any: ...


async def asgi_function(scope: Any, receive: Any, send: Any) -> None: ...


def optional_extra(request: Any, extra: Any = None) -> Any: ...


@pytest.mark.parametrize(
    ("app", "style"),
    [
        (lambda request: "", "plain"),
        (optional_extra, "plain"),
        (lambda environ, start_response: [], "wsgi"),
        (WsgiApp(), "wsgi"),
        (functools.partial(lambda prefix, environ, start_response: [], "x"), "wsgi"),
        (asgi_function, "asgi"),
        (AsgiApp(), "asgi"),
    ],
)
def test_the_style_is_told_from_the_app(app: Callable[..., Any], style: str) -> None:
    assert faas_handler.app_style(app) == style


@pytest.mark.parametrize("app", [lambda *args: None, lambda: None, lambda a, b, c: None, "not callable"])
def test_an_app_of_no_known_style_is_refused_before_the_connection_is_taken(app: Any, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="pass style=|not an app serve"):
        faas_handler.serve(app, str(tmp_path / "never-connected.sock"))
    with pytest.raises(ValueError, match="style must be one of wsgi, asgi, plain, not 'cgi'"):
        faas_handler.serve(lambda request: "", str(tmp_path / "never-connected.sock"), style="cgi")
