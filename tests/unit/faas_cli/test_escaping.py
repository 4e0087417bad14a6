"""What a function or an image supplied reaches the terminal escaped: no controls, no forged rows."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from faas_cli.main import main
from faas_cli.versions import render_describe
from faasd.printable import printable_stream
from tests.unit.faas_cli.test_versions import version

# An image's Cmd that would clear the screen and add a row of its own to `faas list`.
HOSTILE_CMD = ["/bin/app\x1b[2J\x1b[H", "x\r\nadmin     127.0.0.9  1        /bin/sh"]


def controls(text: str) -> set[str]:
    """The control characters in ``text`` but line ends."""
    return {c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0}


@pytest.fixture
def daemon_answering() -> Iterator[Callable[..., str]]:
    """A one-shot HTTP server on 127.0.0.1 that answers with the body given; yields its URL."""
    threads: list[threading.Thread] = []

    def serve(body: bytes, content_type: bytes = b"application/json") -> str:
        server = socket.create_server(("127.0.0.1", 0))

        def answer() -> None:
            with server:
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    conn.sendall(head % (content_type, len(body)) + body)

        thread = threading.Thread(target=answer)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{server.getsockname()[1]}"

    yield serve
    for thread in threads:
        thread.join()


def test_list_escapes_the_command_and_cannot_gain_a_row(daemon_answering: Callable[..., str]) -> None:
    function = {"name": "hello", "ip": "127.0.0.2", "version": 1, "entrypoint": [], "cmd": HOSTILE_CMD}
    url = daemon_answering(json.dumps({"functions": [function]}).encode())
    result = CliRunner().invoke(main, ["--host", url, "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and not controls(result.output)
    assert lines[1].endswith("/bin/app\\x1b[2J\\x1b[H x\\r\\nadmin     127.0.0.9  1        /bin/sh")


def test_describe_escapes_what_the_image_supplied() -> None:
    function = version(1, current=True) | {
        "name": "hello",
        "ip": "127.0.0.2",
        "image": "hello\x1b]0;owned\x07",
        "cmd": HOSTILE_CMD,
        "updated": 1714564900.0,
        "requests": {},
        "versions": [version(1, current=True) | {"image": "v\x9b1m\r"}],
    }
    text = "\n".join(render_describe(function))
    assert not controls(text)
    assert "hello\\x1b]0;owned\\x07" in text and "v\\x9b1m\\r" in text and "x\\r\\nadmin" in text


def test_logs_escape_what_the_function_printed(daemon_answering: Callable[..., str]) -> None:
    log = (
        "2026-01-01T00:00:00.000000Z r1 stdout \x1b]0;pwned\x07\x1b[2Jgone\r\n"
        "2026-01-01T00:00:00.000001Z r1 stderr tab\tkept é\u202e\n"
    ).encode() + b"2026-01-01T00:00:00.000002Z r1 stdout raw \x9b31m byte\n"
    url = daemon_answering(log, b"text/plain; charset=utf-8")
    result = CliRunner().invoke(main, ["--host", url, "logs", "hello"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "2026-01-01T00:00:00.000000Z r1 stdout \\x1b]0;pwned\\x07\\x1b[2Jgone\\r",
        "2026-01-01T00:00:00.000001Z r1 stderr tab\tkept é\\u202e",
        "2026-01-01T00:00:00.000002Z r1 stdout raw \\x9b31m byte",
    ]


def test_a_character_split_across_chunks_is_kept_whole() -> None:
    data = "é✓\x1b\n".encode()
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert b"".join(printable_stream(chunks)) == "é✓\\x1b\n".encode()


def test_an_error_message_from_the_daemon_is_escaped() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                body = json.dumps({"error": "the config's User 'x\x1b[2J\r\nforged' is unknown"}).encode()
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=answer)
    thread.start()
    result = CliRunner().invoke(main, ["--host", f"http://127.0.0.1:{server.getsockname()[1]}", "list"])
    thread.join()
    assert result.exit_code == 1
    assert result.output == "faas: the config's User 'x\\x1b[2J\\r\\nforged' is unknown\n"
