"""Routes by path: which function, prefix and version a request head names, a table of heads."""

from __future__ import annotations

import pytest

from faasd.errors import InvalidRequest
from faasd.paths import MAX_PREFIX_BYTES, Target, is_health, path_route


def head(request_line: str) -> bytes:
    return f"{request_line}\r\nHost: 127.0.0.1\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ("GET /function/hello HTTP/1.1", Target("hello", "/function/hello")),
        ("GET /function/hello/a/b?x=1 HTTP/1.1", Target("hello", "/function/hello")),
        ("GET /function/h%65llo/a HTTP/1.1", Target("hello", "/function/hello")),
        ("POST /invoke/my-func HTTP/1.1", Target("my-func", "/invoke/my-func")),
        ("POST /run/math/add HTTP/1.1", Target("math-add", "/run/math/add")),
        ("POST /run/math/add/ HTTP/1.1", Target("math-add", "/run/math/add")),
        ("POST /run/math/add?version=1735286400 HTTP/1.1", Target("math-add", "/run/math/add", 1735286400)),
        ("POST /run/Reports/Daily_Total HTTP/1.1", Target("reports-daily-total", "/run/Reports/Daily_Total")),
        ("GET /function/hello?version=1 HTTP/1.1", Target("hello", "/function/hello")),  # go-faas's alone
        ("GET /function/Hello HTTP/1.1", None),
        ("GET /function/../etc HTTP/1.1", None),
        ("GET /function/%2e%2e HTTP/1.1", None),
        ("GET /function/ HTTP/1.1", None),
        ("POST /run/ HTTP/1.1", None),
        ("POST /run/--- HTTP/1.1", None),
        ("GET / HTTP/1.1", None),
        ("GET /functions/hello HTTP/1.1", None),
    ],
)
def test_the_path_names_a_function_its_prefix_and_a_version_or_none(line: str, target: Target | None) -> None:
    assert path_route(head(line)) == target


@pytest.mark.parametrize(
    "query", ["version=", "version=abc", "version=-1", "version=1&version=2", "version=1e9", "version=%C2%B2"]
)
def test_a_version_that_is_no_timestamp_is_refused(query: str) -> None:
    with pytest.raises(InvalidRequest, match="one Unix timestamp"):
        path_route(head(f"POST /run/math/add?{query} HTTP/1.1"))


def test_a_prefix_too_long_for_the_handoff_metadata_is_refused() -> None:
    path = "/run/a" + "%C3%A9" * 150  # 150 characters, 6 bytes each in the metadata's JSON
    with pytest.raises(InvalidRequest, match=f"over {MAX_PREFIX_BYTES} bytes"):
        path_route(head(f"POST {path} HTTP/1.1"))


def test_health_is_a_get_of_health_alone() -> None:
    assert is_health(head("GET /health HTTP/1.1")) and is_health(head("GET /health?x HTTP/1.1"))
    assert not is_health(head("POST /health HTTP/1.1")) and not is_health(head("GET /healthz HTTP/1.1"))
