"""The Python SDK on the real daemon, where its timing meets the daemon's: the kill at the
deadline, and the retirement of warm containers. The app answers after as many seconds as its
query says (``/?0.1``)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import CACHE, Daemon, daemon_range, eventually, http_get, start_daemon
from tests.integration.faulty import bundles, containers
from tests.integration.test_pool import metric
from tools.build_image import build_python_image

APP = """
import time

from faas_handler import serve


def app(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done\\n"]


serve(app)
"""


@pytest.fixture(scope="module")
def sdk(daemon_roots: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """A daemon (warm pools empty after 1 s idle) and the image of the app above."""
    app_dir = tmp_path_factory.mktemp("sleeper") / "sleeper"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    image = app_dir.parent / "sleeper.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_python_image(image, CACHE, app_dir=app_dir)
    daemon = start_daemon(daemon_roots, daemon_range(40))
    try:
        yield daemon, image
    finally:
        daemon.stop()


def ask(sock: socket.socket, target: str) -> tuple[int, bytes, str | None]:
    """One GET on ``sock``, left open whatever the response says: its status, body and Connection."""
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: sleeper\r\n\r\n".encode())
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read(), response.getheader("Connection")


def outcomes(daemon: Daemon, name: str) -> list[str]:
    """The daemon's record of each of ``name``'s connections: ``version=1 outcome=served exit=0 ...``."""
    lines = daemon.faas("logs", name).stdout.splitlines()
    return [line.split(" ", 3)[3] for line in lines if line.split(" ", 3)[2] == "faasd"]


def test_a_kept_alive_client_is_never_cut_off_by_the_deadline(sdk: tuple[Daemon, Path]) -> None:
    daemon, image = sdk
    ip = daemon.deploy("deadline", image, "--timeout", "3", "--warm", "0")
    answers = []
    with socket.create_connection((ip, 80), timeout=10) as sock:
        started = time.monotonic()
        # Requests back to back, as a client with a connection pool sends them. Today's SDK is
        # killed with one of them in flight: the read below then fails.
        while time.monotonic() - started < 10:
            answers.append(ask(sock, "/?0.2"))
            if answers[-1][2] == "close":
                break
        assert sock.recv(1) == b"", "the connection ends cleanly after the announced last response"
    assert answers[-1][2] == "close" and len(answers) >= 5
    assert all(answer[:2] == (200, b"done\n") for answer in answers), "every response whole"
    assert eventually(lambda: len(outcomes(daemon, "deadline")) == 1)
    assert outcomes(daemon, "deadline")[0].startswith("version=1 outcome=served exit=0 "), "not killed"


def test_an_idle_kept_alive_connection_is_closed_before_the_deadline(sdk: tuple[Daemon, Path]) -> None:
    daemon, image = sdk
    ip = daemon.deploy("idle", image, "--timeout", "3", "--warm", "0")
    with socket.create_connection((ip, 80), timeout=10) as sock:
        assert ask(sock, "/") == (200, b"done\n", None)
        assert sock.recv(1) == b"", "closed, not reset, and before the socket's own timeout"
    assert eventually(lambda: len(outcomes(daemon, "idle")) == 1)
    assert outcomes(daemon, "idle")[0].startswith("version=1 outcome=served exit=0 "), "not killed"


def test_a_warm_container_retired_by_its_pool_leaves_no_traceback(sdk: tuple[Daemon, Path]) -> None:
    daemon, image = sdk
    ip = daemon.deploy("retired", image)  # the default warm pool, emptied after 1 s without arrivals
    for _ in range(3):
        assert http_get(ip, "/") == (200, b"done\n")
        # The arrival makes the pool start a warm container; an idle second later it is retired.
        assert eventually(lambda: not containers(daemon) and not bundles(daemon), 15)
    # Each start served one of the 3 connections, or was retired without one.
    retired = metric(daemon, "faasd_container_start_seconds_count", function="retired") - 3
    assert retired >= 1, "warm containers were retired"
    logs = daemon.faas("logs", "retired").stdout
    assert "Traceback" not in logs and "HandoffError" not in logs, logs
