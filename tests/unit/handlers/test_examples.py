"""The examples that need no PyPI package run as their images run them, on this Python and on 3.8.

The SDK promises Python 3.8 and newer: where a 3.8 interpreter is installed (``python3.8`` on
PATH, or pyenv's), the plain example and an ASGI app run under it. Flask, Starlette and FastAPI run on
the real libraries in tests/integration/test_handlers.py.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.handlers.harness import HANDLERS, Start, handed_over, http_on, in_process

EXAMPLES = ["flask", "starlette", "fastapi", "plain", "sse"]


def python_38() -> str | None:
    candidates = [shutil.which("python3.8"), *glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8"))]
    for candidate in filter(None, candidates):
        check = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.fixture(params=["this", "3.8"])
def python(request: pytest.FixtureRequest) -> str:
    if request.param == "this":
        return sys.executable
    found = python_38()
    if found is None:
        pytest.skip("no Python 3.8 interpreter here")
    return found


def run_app(python: str, app: Path) -> Start:
    return in_process([python, str(app)], {"PYTHONPATH": str(HANDLERS), "PYTHONDONTWRITEBYTECODE": "1"})


def get(conn: http.client.HTTPConnection, target: str) -> tuple[int, str | None, bytes]:
    conn.request("GET", target)
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type"), response.read()


def test_the_plain_example(tmp_path: Path, python: str) -> None:
    with handed_over(tmp_path, run_app(python, HANDLERS / "plain" / "app.py")) as sock:
        conn = http_on(sock)
        assert get(conn, "/") == (200, "text/plain; charset=utf-8", b"Hello from a plain handler on faasd\n")
        conn.request("PUT", "/echo?a=1", body=b"data", headers={"X-Test": "yes"})
        echoed = json.loads(conn.getresponse().read())
        assert (echoed["method"], echoed["query"], echoed["body"], echoed["headers"]["x-test"]) == (
            "PUT",
            {"a": "1"},
            "data",
            "yes",
        )
        status, content_type, body = get(conn, "/events?count=2&interval=0")
        assert (status, content_type) == (200, "text/event-stream")
        assert body == b'data: {"tick": 1, "of": 2}\n\ndata: {"tick": 2, "of": 2}\n\n'
        assert get(conn, "/fail")[0] == 500
        assert get(conn, "/nowhere") == (404, "application/json", b'{"error": "no route for /nowhere"}')


def test_the_sse_example_counts_on_from_the_last_event_id(tmp_path: Path) -> None:
    with handed_over(tmp_path, run_app(sys.executable, HANDLERS / "sse" / "app.py")) as sock:
        conn = http_on(sock)
        status, content_type, page = get(conn, "/")
        assert (status, content_type) == (200, "text/html; charset=utf-8") and b"EventSource" in page
        conn.request("GET", "/clock?count=2&interval=0", headers={"Last-Event-ID": "9"})
        events = conn.getresponse().read().decode().split("\n\n")
    assert [event.splitlines()[:3] for event in events[:2]] == [
        ["event: time", "id: 10", "retry: 1000"],
        ["event: time", "id: 11", "retry: 1000"],
    ]


ASGI_APP = """
from faas_handler import serve

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        scope["state"]["word"] = b"lifespan"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (scope["state"]["word"], b" ", body):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})

serve(app)
"""


def test_an_asgi_app_runs_with_lifespan_and_streaming(tmp_path: Path, python: str) -> None:
    app = tmp_path / "asgi_app.py"
    app.write_text(ASGI_APP)
    with handed_over(tmp_path, run_app(python, app)) as sock:
        conn = http_on(sock)
        conn.request("POST", "/", body=b"body")
        response = conn.getresponse()
        assert (response.getheader("Transfer-Encoding"), response.read()) == ("chunked", b"lifespan body")


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_says_how_to_build_it_with_docker(name: str) -> None:
    dockerfile = (HANDLERS / name / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in dockerfile
    assert f"COPY handlers/faas_handler.py handlers/{name}/app.py /app/" in dockerfile
    if (HANDLERS / name / "requirements.txt").exists():
        assert "pip install --no-cache-dir -r /app/requirements.txt" in dockerfile
    assert f"docker build -f handlers/{name}/Dockerfile" in (HANDLERS / name / "README.md").read_text()
