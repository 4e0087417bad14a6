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


def decorated(app: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(app)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return app(*args, **kwargs)

    return wrapper


class Methods:
    def wsgi(self, environ: Any, start_response: Any) -> Any: ...

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None: ...

    @classmethod
    def plain(cls, request: Any) -> Any: ...

    @staticmethod
    def static(environ: Any, start_response: Any) -> Any: ...


class ClassAsApp:  # PEP 3333 allows a class: calling it makes the response iterable
    def __init__(self, environ: Any, start_response: Any) -> None: ...


def with_keyword_only(environ: Any, start_response: Any, *, extra: Any) -> Any: ...


def plain_function(request: Any) -> Any: ...


SHAPES = [
    plain_function,
    optional_extra,
    lambda environ, start_response: [],
    lambda *args: None,
    lambda: None,
    lambda a, b, c: None,
    lambda a, b=1, c=2: None,
    with_keyword_only,
    asgi_function,
    WsgiApp(),
    AsgiApp(),
    Methods().wsgi,
    Methods().asgi,
    Methods.plain,
    Methods.static,
]
BY_INSPECT_ONLY = [
    functools.partial(lambda prefix, environ, start_response: [], "x"),
    decorated(lambda environ, start_response: []),
    decorated(asgi_function),
    ClassAsApp,
    print,
]


@pytest.mark.parametrize("app", SHAPES)
def test_the_code_object_tells_what_inspect_would(app: Callable[..., Any]) -> None:
    assert faas_handler._python_function(app)[0] is not None, "read without importing inspect"
    assert faas_handler._call_shape(app) == faas_handler._call_shape_by_inspect(app)


@pytest.mark.parametrize("app", BY_INSPECT_ONLY)
def test_what_the_code_object_cannot_tell_is_left_to_inspect(app: Callable[..., Any]) -> None:
    assert faas_handler._python_function(app) == (None, 0)


@pytest.mark.parametrize(
    ("app", "style"),
    [
        (decorated(lambda environ, start_response: []), "wsgi"),
        (decorated(lambda request: ""), "plain"),
        (ClassAsApp, "wsgi"),
    ],
)
def test_wrapped_apps_and_classes_get_their_style_from_inspect(app: Callable[..., Any], style: str) -> None:
    assert faas_handler.app_style(app) == style


def test_records_are_frozen_and_compare_by_value() -> None:
    response = Response("hi", status=201)
    assert response == Response("hi", 201, (), None) and response != Response("hi") and hash(response)
    assert repr(response) == "Response(body='hi', status=201, headers=(), content_type=None)"
    with pytest.raises(AttributeError, match="Response is frozen: cannot set 'status'"):
        response.status = 500
    with pytest.raises(AttributeError, match="frozen"):
        del response.body
    with pytest.raises(AttributeError):
        response.other = 1
    first, second = (Request("GET", "/", {}, None, b"") for _ in range(2))
    assert first.metadata == {} and first.metadata is not second.metadata


def test_a_tuple_keeps_the_responses_own_headers_and_type() -> None:
    response = faas_handler.as_response((202, Response("x", headers={"A": "1"}, content_type="text/x"), [("B", "2")]))
    assert response == Response("x", 202, [("A", "1"), ("B", "2")], "text/x")
