"""Nothing a function or a client does stalls the daemon's event loop, which every function,
the gateway and the control API share: the API answers ``/healthz`` all along."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

from tests.integration.conftest import Daemon, eventually
from tests.integration.faulty import containers

LINGER_SECONDS = 20
# Far below LINGER_SECONDS: a close that waited for the linger would take that long.
PATIENCE_SECONDS = 5.0


def healthz_seconds(daemon: Daemon) -> float:
    """How long one ``GET /healthz`` on the control socket takes; fails past ``PATIENCE_SECONDS``."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("localhost", timeout=PATIENCE_SECONDS)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.settimeout(PATIENCE_SECONDS)
    try:
        conn.sock.connect(str(daemon.socket))
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    except TimeoutError:
        raise AssertionError(f"/healthz did not answer within {PATIENCE_SECONDS} s") from None
    finally:
        conn.close()
    return time.monotonic() - started


def silent_client(ip: str, path: str) -> socket.socket:
    """A client that sends one GET and never reads, with a small receive window."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect((ip, 80))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return client


def test_a_linger_a_handler_sets_on_the_client_socket_never_stalls_the_daemon(
    daemon: Daemon, probe_image: Path
) -> None:
    ip = daemon.deploy("lingers", probe_image, "--warm", "0")
    attackers = [silent_client(ip, f"/linger?s={LINGER_SECONDS}") for _ in range(3)]
    try:
        latencies = []
        until = time.monotonic() + PATIENCE_SECONDS
        while time.monotonic() < until:
            latencies.append(healthz_seconds(daemon))
            time.sleep(0.05)
        assert eventually(lambda: not containers(daemon))
        assert max(latencies) < PATIENCE_SECONDS
    finally:
        for attacker in attackers:
            attacker.close()
