"""Each example handler as a real image on the real daemon, spoken to over HTTP on loopback.

The Flask, Starlette and FastAPI images carry the real libraries, installed from PyPI wheels into the
app layer (cached under FAAS_TEST_CACHE, so a rerun is offline). Every connection below gets a
container of its own; two requests on one connection are served by the same container.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import CACHE, Daemon, daemon_range, eventually, free_port, http_get, start_daemon
from tools.build_image import HANDLERS, build_python_image

GREETINGS = {
    "flask": b"Hello from Flask on faasd\n",
    "starlette": b"Hello from Starlette on faasd\n",
    "fastapi": b"Hello from FastAPI on faasd\n",
    "plain": b"Hello from a plain handler on faasd\n",
}
EXAMPLES = list(GREETINGS)
GATEWAY_PORT = free_port()


@pytest.fixture(scope="module")
def deployed(daemon_roots: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, str]]]:
    """One daemon with every example deployed as ``<example>-example``; the examples' IPs by name."""
    images = tmp_path_factory.mktemp("example-images")
    CACHE.mkdir(parents=True, exist_ok=True)
    daemon = start_daemon(daemon_roots, daemon_range(20), "--gateway", f"127.0.0.1:{GATEWAY_PORT}")
    try:
        ips = {}
        for name in [*EXAMPLES, "sse"]:
            image = images / f"{name}.tar"
            build_python_image(image, CACHE, app_dir=HANDLERS / name)
            ips[name] = daemon.deploy(f"{name}-example", image)
            image.unlink()  # the base layer makes each about 130 MB
        yield daemon, ips
    finally:
        daemon.stop()


@pytest.fixture(params=EXAMPLES)
def example(request: pytest.FixtureRequest, deployed: tuple[Daemon, dict[str, str]]) -> tuple[str, str]:
    """(name, ip) of each example that keeps the common routes: /, /echo, /events, /fail."""
    return request.param, deployed[1][request.param]


def echo(conn: http.client.HTTPConnection, method: str, target: str, body: bytes | None = None) -> dict[str, Any]:
    conn.request(method, target, body=body, headers={"X-Test": "yes", "Content-Type": "text/plain"})
    response = conn.getresponse()
    assert (response.status, response.getheader("Content-Type")) == (200, "application/json")
    return json.loads(response.read())


def read_events(response: http.client.HTTPResponse) -> Iterator[tuple[float, dict[str, str]]]:
    """Each event's fields as it arrives, with the time it arrived."""
    fields: dict[str, str] = {}
    while line := response.readline():
        if line in (b"\n", b"\r\n"):
            yield time.monotonic(), fields
            fields = {}
        else:
            name, _, value = line.decode().rstrip("\r\n").partition(": ")
            fields[name] = value


def test_get_answers_from_the_example(example: tuple[str, str]) -> None:
    name, ip = example
    assert http_get(ip, "/") == (200, GREETINGS[name])


def test_query_headers_and_body_reach_the_app_on_one_kept_alive_connection(example: tuple[str, str]) -> None:
    name, ip = example
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    try:
        got = echo(conn, "GET", "/echo?city=Z%C3%BCrich&n=1")
        sock = conn.sock
        posted = echo(conn, "POST", "/echo", body=b"ping " * 1000)
        assert conn.sock is sock, "the second request went over the same connection"
    finally:
        conn.close()
    assert (got["method"], got["path"], got["query"], got["body"]) == ("GET", "/echo", {"city": "Zürich", "n": "1"}, "")
    assert (posted["method"], posted["query"], posted["body"]) == ("POST", {}, "ping " * 1000)
    assert posted["headers"]["x-test"] == "yes" and posted["headers"]["content-length"] == "5000"
    assert got["request_id"] == posted["request_id"], "one connection, one container"


@pytest.mark.parametrize("name", ["flask", "starlette", "fastapi"])
def test_under_the_gateways_path_prefix_the_app_is_mounted_there(
    name: str, deployed: tuple[Daemon, dict[str, str]]
) -> None:
    """The prefix travels in the handoff metadata: SCRIPT_NAME (WSGI) or root_path (ASGI), so the
    framework routes the rest of the path and url_for builds URLs under the prefix."""
    prefix = f"/function/{name}-example"
    conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=30)
    try:
        conn.request("GET", f"{prefix}/links", headers={"Host": "127.0.0.1"})
        response = conn.getresponse()
        mounted = (response.status, json.loads(response.read()))
        conn.request("GET", f"{prefix}/", headers={"Host": "127.0.0.1"})
        index = conn.getresponse()
        greeting = (index.status, index.read())
    finally:
        conn.close()
    assert mounted == (200, {"mounted_at": prefix, "path": "/links", "echo": f"{prefix}/echo"})
    assert greeting == (200, GREETINGS[name]), "the app's own / under the prefix, kept alive on one connection"
    status, body = http_get(deployed[1][name], "/links")
    assert (status, json.loads(body)) == (200, {"mounted_at": "", "path": "/links", "echo": "/echo"}), "by address"


def test_server_sent_events_arrive_one_at_a_time(example: tuple[str, str]) -> None:
    name, ip = example
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    try:
        conn.request("GET", "/events?count=3&interval=0.4")
        response = conn.getresponse()
        assert response.getheader("Content-Type").startswith("text/event-stream")
        arrivals = list(read_events(response))
    finally:
        conn.close()
    assert [json.loads(fields["data"]) for _, fields in arrivals] == [{"tick": n, "of": 3} for n in (1, 2, 3)]
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first >= 0.6, "the events came as they were made, not all at once at the end"


def test_an_exception_in_the_app_is_a_500_and_a_traceback_in_the_log(
    example: tuple[str, str], deployed: tuple[Daemon, dict[str, str]]
) -> None:
    name, ip = example
    status, _ = http_get(ip, "/fail")
    assert status == 500
    daemon = deployed[0]
    assert eventually(lambda: "this route fails on purpose" in daemon.faas("logs", f"{name}-example").stdout)
    assert http_get(ip, "/")[0] == 200, "the next connection gets a fresh container"


def test_the_sse_clock_resumes_after_the_last_event_id(deployed: tuple[Daemon, dict[str, str]]) -> None:
    ip = deployed[1]["sse"]
    status, page = http_get(ip, "/")
    assert status == 200 and b'new EventSource("/clock")' in page
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    try:
        conn.request("GET", "/clock?count=3&interval=0.4", headers={"Last-Event-ID": "41"})
        response = conn.getresponse()
        assert (response.status, response.getheader("Cache-Control")) == (200, "no-store")
        arrivals = list(read_events(response))
    finally:
        conn.close()
    assert [(fields["event"], fields["id"], fields["retry"]) for _, fields in arrivals] == [
        ("time", "42", "1000"),
        ("time", "43", "1000"),
        ("time", "44", "1000"),
    ]
    assert [json.loads(fields["data"])["n"] for _, fields in arrivals] == [42, 43, 44]
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6
