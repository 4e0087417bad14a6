"""What a hostile image and function supply reaches the terminal and the daemon's log escaped."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Daemon, daemon_range, eventually, free_port, http_get

# A Cmd argument that would clear the screen and forge a row of `faas list`.
FORGED = "hi\x1b[2J\r\nadmin     127.0.0.9  1        /bin/sh"
# What the function prints: retitle the terminal, clear it, overwrite the line.
PRINTS = r"printf '\033]0;pwned\007\033[2J\rFAKE\n'"


def raw_controls(text: str) -> set[str]:
    """Control characters in ``text``, line ends aside."""
    return {c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0}


def test_list_describe_and_logs_show_what_the_image_and_function_sent_escaped(
    daemon: Daemon, busybox_image: Callable[..., Path]
) -> None:
    ip = daemon.deploy("hostile", busybox_image(FORGED, prelude=PRINTS))
    assert http_get(ip)[0] == 200

    listed = daemon.faas("list")
    assert listed.returncode == 0 and not raw_controls(listed.stdout), repr(listed.stdout)
    assert len(listed.stdout.splitlines()) == 2, "the Cmd gained no row"
    assert "hi\\x1b[2J\\r\\nadmin" in listed.stdout

    described = daemon.faas("describe", "hostile")
    assert described.returncode == 0 and not raw_controls(described.stdout), repr(described.stdout)
    assert "hi\\x1b[2J\\r\\nadmin" in described.stdout

    assert eventually(lambda: "pwned" in daemon.faas("logs", "hostile").stdout)
    logs = daemon.faas("logs", "hostile").stdout
    assert not raw_controls(logs), repr(logs)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\rFAKE" in logs

    as_json = json.loads(daemon.faas("describe", "hostile", "--json").stdout)
    assert as_json["cmd"][-1] == FORGED, "--json keeps the exact value, escaped by JSON"


def test_unauthenticated_floods_add_a_few_lines_to_the_daemons_log(make_daemon: Callable[..., Daemon]) -> None:
    """300 requests on the gateway for no function and 300 on the API without the token."""
    gateway, api = free_port(), free_port()
    daemon = make_daemon(daemon_range(42), "--gateway", f"127.0.0.1:{gateway}", "--listen", f"127.0.0.1:{api}")
    before = len(daemon.log.read_text().splitlines())
    host = "\x1b[2J" + "h" * 4000
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", gateway)) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 404 ")
        conn = http.client.HTTPConnection("127.0.0.1", api, timeout=30)
        conn.request("GET", "/v1/functions")
        assert conn.getresponse().status == 401
        conn.close()
    lines = daemon.log.read_text().splitlines()[before:]
    refused = [line for line in lines if "gateway refused" in line or "api refused" in line]
    assert 2 <= len(refused) <= 60, len(refused)
    assert all(len(line) < 400 for line in lines), max(lines, key=len)
    assert not raw_controls("\n".join(lines))
