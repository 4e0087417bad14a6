"""Who may use the control API: the unix socket's mode and group, the TCP listener's token."""

from __future__ import annotations

import grp
import http.client
import json
import os
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, Daemon, daemon_range, free_port, http_get, new_daemon


def faas_over_tcp(url: str, token: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``faas`` CLI, reaching the daemon through FAAS_HOST only (no socket given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")} | {"FAAS_HOST": url}
    if token is not None:
        env["FAAS_TOKEN"] = token
    return subprocess.run([str(BIN / "faas"), *args], env=env, capture_output=True, text=True, timeout=300)


def post_image(port: int, image: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/functions/hello", body=image, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("WWW-Authenticate", ""), json.loads(response.read())["error"]
    finally:
        conn.close()


@pytest.fixture
def tcp_daemon(make_daemon: Callable[..., Daemon]) -> tuple[Daemon, int]:
    port = free_port()
    return make_daemon(daemon_range(20), "--listen", f"127.0.0.1:{port}"), port


def test_no_token_or_a_wrong_one_gets_401_and_deploys_nothing(tcp_daemon, busybox_image) -> None:
    daemon, port = tcp_daemon
    url = f"http://127.0.0.1:{port}"
    image = busybox_image()
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        status, challenge, error = post_image(port, image.read_bytes(), headers)
        assert (status, challenge) == (401, 'Bearer realm="faasd"'), error

    missing = faas_over_tcp(url, None, "new", "hello", "-f", str(image))
    assert missing.returncode == 1
    assert f"faasd at {url} needs a token: pass --token or set FAAS_TOKEN" in missing.stderr
    wrong = faas_over_tcp(url, "not-the-token", "new", "hello", "-f", str(image))
    assert wrong.returncode == 1 and f"faasd at {url} refused the token" in wrong.stderr

    assert daemon.faas("list", "--json").stdout.strip() == "[]"
    assert list((daemon.state_dir / "images").iterdir()) == []
    assert list((daemon.state_dir / "uploads").iterdir()) == []
    assert "api refused reason=missing_token" in daemon.log.read_text()


def test_deploy_and_list_over_tcp_with_the_token(tcp_daemon, busybox_image) -> None:
    daemon, port = tcp_daemon
    url, token = f"http://127.0.0.1:{port}", (daemon.state_dir / "api.token").read_text().strip()
    deployed = faas_over_tcp(url, token, "new", "hello", "-f", str(busybox_image("over tcp")))
    assert deployed.returncode == 0, deployed.stderr
    listed = json.loads(faas_over_tcp(url, token, "list", "--json").stdout)
    assert [f["name"] for f in listed] == ["hello"]
    assert http_get(listed[0]["ip"]) == (200, b"over tcp\n")
    assert token not in daemon.log.read_text(), "the token is never logged"


def test_socket_and_token_file_modes_and_the_token_survives_a_restart(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(daemon_range(21))
    status = daemon.socket.stat()
    assert stat.S_IMODE(status.st_mode) == 0o660 and status.st_uid == 0
    try:
        assert status.st_gid == grp.getgrnam("faas").gr_gid
    except KeyError:
        assert status.st_gid == 0
    token_file = daemon.state_dir / "api.token"
    assert not token_file.exists(), "no token without a TCP listener"

    daemon.stop()
    port = free_port()
    daemon.extra_args = ["--listen", f"127.0.0.1:{port}"]
    daemon.start()
    status = token_file.stat()
    assert stat.S_IMODE(status.st_mode) == 0o600 and status.st_uid == 0
    token = token_file.read_text()

    daemon.stop()
    daemon.start()
    assert token_file.read_text() == token
    assert faas_over_tcp(f"http://127.0.0.1:{port}", token.strip(), "list").returncode == 0


def test_a_taken_listen_address_stops_the_start_with_exit_3(daemon_roots: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        daemon = new_daemon(daemon_roots, daemon_range(22), "--listen", f"127.0.0.1:{port}")
        result = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "cannot serve the control API" in result.stderr and "address already in use" in result.stderr
    assert not daemon.socket.exists()
