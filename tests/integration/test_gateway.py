"""The gateway port with the real daemon: each connection reaches the function its Host names."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from tests.integration.conftest import daemon_range, free_port


def get(port: int, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_gateway_routes_by_host_to_the_same_handoff(make_daemon, busybox_image) -> None:
    port = free_port()
    daemon = make_daemon(daemon_range(7), "--gateway", f"127.0.0.1:{port}", "--gateway-domain", "fn.test")
    daemon.deploy("hello", busybox_image("hello via the gateway"))
    daemon.deploy("other", busybox_image("the other one"))
    assert get(port, f"hello.fn.test:{port}") == (200, b"hello via the gateway\n")
    assert get(port, "other") == (200, b"the other one\n")
    status, body = get(port, "nobody.fn.test")
    assert status == 404 and json.loads(body)["error"] == (
        "no function named 'nobody': the Host header names a function as NAME.fn.test or NAME (a port after either "
        f"is ignored), e.g. curl http://NAME.fn.test:{port}/ or curl -H 'Host: NAME' http://127.0.0.1:{port}/"
    )
    status, body = get(port, "Not a name!")
    assert status == 404 and json.loads(body)["error"].startswith("no function is reached as 'Not a name!': the Host")

    described = daemon.faas("describe", "hello").stdout
    assert f"Gateway:   http://hello.fn.test:{port}/  (curl -H 'Host: hello' http://127.0.0.1:{port}/)" in described

    daemon.faas("rm", "other")
    assert get(port, "other")[0] == 404, "a removed function is gone from the gateway too"
    assert get(port, "hello.fn.test")[0] == 200


def test_a_gateway_address_in_use_stops_the_start_with_the_reason(make_daemon) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match="(?s)exited with 3.*cannot serve the gateway"):
            make_daemon(daemon_range(8), "--gateway", f"127.0.0.1:{port}")
