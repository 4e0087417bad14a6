"""The answers the daemon writes itself, when no handler could: 502, 503 and 504."""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import CACHE, daemon_range, eventually, http_get
from tools.build_image import HANDLERS, build_python_image


def answer(ip: str, path: str) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of one GET on a new connection."""
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_a_handler_that_exits_without_a_word_gets_its_client_a_502(make_daemon, probe_image: Path) -> None:
    daemon = make_daemon(daemon_range(5))
    ip = daemon.deploy("quitter", probe_image)
    status, headers, body = answer(ip, "/exit")
    assert status == 502
    assert headers["Connection"] == "close" and headers["Content-Type"] == "application/json"
    request_id = headers["X-Request-Id"]
    assert body == {
        "error": f"the function's handler exited without answering: see `faas logs quitter` (request {request_id})",
        "request_id": request_id,
    }
    assert eventually(lambda: f" {request_id} faasd " in daemon.faas("logs", "quitter").stdout), "the id the log has"
    assert http_get(ip, "/interfaces") == (200, b'["lo"]\n')


def test_over_the_admission_limits_clients_get_503_with_retry_after(make_daemon, probe_image: Path) -> None:
    daemon = make_daemon(daemon_range(6), "--max-containers", "1", "--queue", "1", "--queue-timeout", "1")
    ip = daemon.deploy("busy", probe_image, "--timeout", "4")
    bundles = daemon.root / "run" / "bundles"
    with ThreadPoolExecutor(3) as pool:
        spinner = pool.submit(answer, ip, "/spin")
        assert eventually(lambda: any(bundles.iterdir())), "the spinner's container started"
        waiting = pool.submit(answer, ip, "/interfaces")
        time.sleep(0.2)  # the second connection is queued: the third finds the queue full
        status, headers, body = answer(ip, "/interfaces")
        assert (status, headers["Retry-After"], headers["Connection"]) == (503, "1", "close")
        assert "queue is full" in body["error"]
        status, headers, body = waiting.result()
        assert status == 503 and "within 1 s" in body["error"]
        status, headers, body = spinner.result()
        assert status == 504 and body["request_id"] == headers["X-Request-Id"]
        assert body["error"].endswith(f": see `faas logs busy` (request {body['request_id']})")
    assert http_get(ip, "/interfaces")[0] == 200, "slots are given back"

    counted = daemon.faas("stats", "--raw").stdout
    for status, count in (("handler", 1), ("503", 2), ("504", 1)):
        assert f'faasd_requests_total{{function="busy",status="{status}"}} {count:.1f}' in counted
    row = next(line for line in daemon.faas("stats").stdout.splitlines() if line.startswith("busy "))
    assert row.split()[1:6] == ["4", "1", "0", "2", "1"]


def read_to_eof(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str]]:
    """Send ``request`` and read to EOF; the status and JSON body. A reset, which can discard
    an answer, raises."""
    received = b""
    with socket.create_connection(address, timeout=30) as client:
        client.sendall(request)
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_every_answer_the_daemon_writes_ends_with_a_fin_not_a_reset(make_daemon, probe_image: Path) -> None:
    """RFC 9112 §9.6: the request body nobody read is drained after a half-close."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = make_daemon(daemon_range(40), "--gateway", f"127.0.0.1:{port}")
    ip = daemon.deploy("quits", probe_image)
    body = b"x" * 100_000
    quits = b"POST /exit HTTP/1.1\r\nHost: quits\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    status, answer = read_to_eof((ip, 80), quits)
    assert status == 502 and answer["error"].startswith("the function's handler exited without answering")
    status, answer = read_to_eof(("127.0.0.1", port), b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
    assert status == 404 and answer["error"].startswith("no function named 'nobody': the Host header names")


@pytest.fixture(scope="session")
def flask_image(images: Path) -> Path:
    """The Flask example: every start of its container imports Flask, a few hundred ms of CPU."""
    out = images / "flask.tar"
    if not out.exists():
        build_python_image(out, CACHE, app_dir=HANDLERS / "flask")
    return out


def test_a_burst_of_heavy_starts_takes_turns_and_none_is_killed_for_being_slow(make_daemon, flask_image: Path) -> None:
    """64 connections at once to an app whose every start imports Flask: sharing two CPUs 32
    ways, every start would pass the start timeout; taking turns, each one is quick."""
    daemon = make_daemon(daemon_range(41))
    ip = daemon.deploy("heavy", flask_image, "--warm", "0")
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda _: http_get(ip, timeout=120)[0], range(64)))
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 32, sorted(statuses)
