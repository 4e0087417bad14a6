"""Every connection pays for the SDK's import in a fresh container: a WSGI or plain app must not
bring in what only ASGI (or nothing at all) needs.

Each check runs a clean interpreter (``-I -S``: no site, no environment) and reads its
``sys.modules``: after ``import faas_handler``, and after serving real requests with the examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.handlers.harness import HANDLERS, handed_over, http_on, in_process

# asyncio and its company (~50 ms), http.server (email, html, socketserver), dataclasses and
# inspect, typing, logging: each costs milliseconds that every container would pay again.
HEAVY = {
    "asyncio",
    "concurrent.futures",
    "threading",
    "queue",
    "ssl",
    "inspect",
    "dataclasses",
    "typing",
    "http.server",
    "http.client",
    "email",
    "socketserver",
    "urllib.parse",
    "logging",
    "traceback",
    "contextlib",
}

SERVE_AND_REPORT = """
import atexit, json, sys
sys.path[:0] = [{handlers!r}, {app_dir!r}]
import faas_handler
from app import {name} as app

@atexit.register  # serve() ends the process; it runs atexit callbacks first
def report():
    with open(sys.argv[1], "w") as out:
        json.dump(sorted(sys.modules), out)

faas_handler.serve(app)
"""


def modules_after(code: str, *paths: Path) -> set[str]:
    """The modules a clean interpreter holds after running ``code`` with ``paths`` (and the SDK's) on sys.path."""
    path = [str(HANDLERS), *map(str, paths)]
    code = f"import sys; sys.path[:0] = {path!r}\n{code}\nimport json; print(json.dumps(list(sys.modules)))"
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(run.stdout))


def test_importing_the_sdk_brings_in_nothing_heavy() -> None:
    loaded = modules_after("import faas_handler")
    assert "faas_handler" in loaded and "socket" in loaded  # the check sees what the import brought
    assert loaded & HEAVY == set()


@pytest.mark.parametrize("example", ["hello", "plain"])
def test_the_examples_import_nothing_heavy_either(example: str) -> None:
    loaded = modules_after("import app", HANDLERS / example)
    assert "app" in loaded and loaded & HEAVY == set()


@pytest.mark.parametrize(("example", "name"), [("hello", "app"), ("plain", "handle")])
def test_serving_a_wsgi_or_plain_app_brings_in_nothing_heavy(tmp_path: Path, example: str, name: str) -> None:
    report = tmp_path / "modules.json"
    script = tmp_path / "serve.py"
    script.write_text(SERVE_AND_REPORT.format(handlers=str(HANDLERS), app_dir=str(HANDLERS / example), name=name))
    with handed_over(tmp_path, in_process([sys.executable, "-I", "-S", str(script), str(report)])) as sock:
        conn = http_on(sock)
        conn.request("POST", "/echo?q=%C3%A9", body=b"ping")
        echoed = json.loads(conn.getresponse().read())
        conn.request("GET", "/nowhere", headers={"Connection": "close"})
        conn.getresponse().read()
    assert echoed["body"] == "ping"  # the request went through the app
    loaded = set(json.loads(report.read_text()))
    assert loaded & HEAVY == set()


def test_an_asgi_app_gets_its_modules_when_it_is_served() -> None:
    code = """
import faas_handler

async def app(scope, receive, send):
    raise ValueError("declines the lifespan")

try:
    faas_handler.serve(app, "/nonexistent/control.sock")
except faas_handler.HandoffError:
    pass
"""
    assert {"asyncio", "concurrent.futures", "threading"} <= modules_after(code)
