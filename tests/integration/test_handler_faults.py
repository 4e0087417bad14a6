"""Handlers that fail: killed, crashed, silent, unstartable. The client is never left hanging."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.integration.conftest import CACHE, Daemon, daemon_range, eventually, http_get
from tests.integration.faulty import (
    bundles,
    busybox_variant,
    containers,
    read_to_close,
    runc,
    status_of,
    wait_for_handler,
)
from tests.integration.test_pool import metric
from tools.build_image import build_python_image

# Without a request the C handler takes the connection and blocks reading it: a handler mid-request.
SILENT_CLIENT_SECONDS = 15


@pytest.fixture
def short_daemon(make_daemon) -> Daemon:
    """A daemon with short start and connection timeouts, so waiting for them stays cheap."""
    return make_daemon(daemon_range(11), "--start-timeout", "1", "--timeout", "3")


def test_container_killed_from_outside_mid_request(short_daemon: Daemon, busybox_image) -> None:
    ip = short_daemon.deploy("victim", busybox_image("victim"))
    with socket.create_connection((ip, 80), timeout=5) as client:
        container_id = wait_for_handler(short_daemon, client)
        result = runc(short_daemon, "kill", container_id, "KILL")
        assert result.returncode == 0, result.stderr
        started = time.monotonic()
        answer = read_to_close(client, SILENT_CLIENT_SECONDS)
    assert time.monotonic() - started < 2, "the client learns of the kill at once, not at the deadline"
    assert status_of(answer) == 502, "the handler died before sending a byte"
    assert http_get(ip) == (200, b"victim\n"), "the daemon keeps serving"
    assert eventually(lambda: not containers(short_daemon) and not bundles(short_daemon))


def test_handler_that_dies_holding_the_connection(short_daemon: Daemon, busybox_image, tmp_path: Path) -> None:
    # sh stays pid 1 (so the kill from inside works) while its child handler holds the client.
    image = busybox_variant(
        busybox_image(), tmp_path / "dies.tar", ["/bin/sh", "-c", "hello & sleep 0.5; kill -9 $!; exit 0"]
    )
    ip = short_daemon.deploy("dies", image)
    with socket.create_connection((ip, 80), timeout=5) as client:
        started = time.monotonic()
        answer = read_to_close(client, SILENT_CLIENT_SECONDS)
    assert time.monotonic() - started < 2.5, "answered when the handler died, not at the deadline"
    assert status_of(answer) == 502, answer


def test_handler_at_the_deadline_is_killed(short_daemon: Daemon, busybox_image) -> None:
    ip = short_daemon.deploy("slow", busybox_image("slow"))
    with socket.create_connection((ip, 80), timeout=5) as client:
        wait_for_handler(short_daemon, client)
        started = time.monotonic()
        answer = read_to_close(client, SILENT_CLIENT_SECONDS)
    assert 1 < time.monotonic() - started < 5, "closed at the 3 s deadline"
    assert status_of(answer) == 504, answer
    assert eventually(lambda: not containers(short_daemon) and not bundles(short_daemon))
    assert http_get(ip) == (200, b"slow\n")


def test_handler_that_never_connects_gets_a_502_at_the_start_timeout(
    short_daemon: Daemon, busybox_image, tmp_path: Path
) -> None:
    ip = short_daemon.deploy("mute", busybox_variant(busybox_image(), tmp_path / "mute.tar", ["/bin/sleep", "600"]))
    started = time.monotonic()
    status, body = http_get(ip, timeout=SILENT_CLIENT_SECONDS)
    assert 0.9 < time.monotonic() - started < 4
    assert status == 502
    assert "did not connect to /control.sock in time" in json.loads(body)["error"]
    assert eventually(lambda: not containers(short_daemon) and not bundles(short_daemon))


@pytest.mark.parametrize(
    "cmd",
    [
        pytest.param(["/etc/passwd"], id="not-executable"),
        pytest.param(["/bin"], id="a-directory"),
        pytest.param(["no-such-command-on-path"], id="not-on-path"),
        pytest.param(["/bin/sh", "-c", "exit 3"], id="exits-at-once"),
    ],
)
def test_bad_cmd_gets_a_502_and_the_daemon_keeps_serving(
    short_daemon: Daemon, busybox_image, tmp_path: Path, cmd: list[str]
) -> None:
    good_ip = short_daemon.deploy("good", busybox_image("good"))
    bad_ip = short_daemon.deploy("bad", busybox_variant(busybox_image(), tmp_path / "bad.tar", cmd))
    status, body = http_get(bad_ip, timeout=SILENT_CLIENT_SECONDS)
    assert status == 502
    assert json.loads(body)["error"].startswith("the function's container")
    assert http_get(good_ip) == (200, b"good\n")
    assert eventually(lambda: not containers(short_daemon) and not bundles(short_daemon))


def test_a_warm_container_whose_handler_hung_up_is_passed_over(make_daemon, images: Path) -> None:
    image = images / "hangup.tar"
    build_python_image(image, CACHE, app_dir=Path(__file__).parent / "hangup")
    daemon = make_daemon(daemon_range(42), "--warm-idle", "60")
    ip = daemon.deploy("hangs-up", image, "--warm", "1")
    assert http_get(ip) == (200, b"ok\n")
    assert eventually(lambda: metric(daemon, "faasd_warm_containers") >= 1), "a warm one waits"
    time.sleep(3)  # and hangs up /control.sock, its container still running
    assert http_get(ip) == (200, b"ok\n"), "a fresh container serves the connection"
    assert "outcome=hung_up" in daemon.faas("logs", "hangs-up").stdout
    assert "Traceback" not in daemon.log.read_text()
