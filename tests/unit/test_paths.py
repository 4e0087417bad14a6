"""Routes by path: which function a request head names, a table of heads."""

from __future__ import annotations

import pytest

from faasd.paths import is_health, path_function


def head(request_line: str) -> bytes:
    return f"{request_line}\r\nHost: 127.0.0.1\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("line", "function"),
    [
        ("GET /function/hello HTTP/1.1", "hello"),
        ("GET /function/hello/a/b?x=1 HTTP/1.1", "hello"),
        ("POST /invoke/my-func HTTP/1.1", "my-func"),
        ("POST /run/math/add HTTP/1.1", "math-add"),
        ("POST /run/Reports/Daily_Total HTTP/1.1", "reports-daily-total"),
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
def test_the_path_names_a_function_or_none(line: str, function: str | None) -> None:
    assert path_function(head(line)) == function


def test_health_is_a_get_of_health_alone() -> None:
    assert is_health(head("GET /health HTTP/1.1")) and is_health(head("GET /health?x HTTP/1.1"))
    assert not is_health(head("POST /health HTTP/1.1")) and not is_health(head("GET /healthz HTTP/1.1"))
