"""The gateway's routing on real sockets: what it peeks, where it sends, what it refuses."""

import asyncio
import logging
import socket
from http import HTTPStatus

import pytest

import faasd.gateway as gateway_module
from faasd.errors import NotFound
from faasd.gateway import MAX_HEAD_BYTES, BadHead, Gateway, function_name, host_header, peek_head
from faasd.paths import Target

HEAD = b"GET / HTTP/1.1\r\nHost: hello.localhost:8000\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("hello.localhost:8000", "hello"),
        ("hello.localhost", "hello"),
        ("HELLO.LocalHost.", "hello"),
        ("hello", "hello"),
        ("hello:80", "hello"),
        ("a.b.localhost", None),
        ("localhost", "localhost"),
        ("127.0.0.1:8000", None),
        ("[::1]:8000", None),
        ("", None),
        ("hello.example.org", None),
    ],
)
def test_function_names_from_hosts(host: str, name: str | None) -> None:
    assert function_name(host, "localhost") == name


def test_a_custom_domain() -> None:
    assert function_name("hello.fn.example.org", "fn.example.org") == "hello"


def test_the_host_header_is_found_in_any_case() -> None:
    assert host_header(HEAD) == "hello.localhost:8000"
    assert host_header(b"POST /x HTTP/1.0\r\nhOsT:  a  \r\n\r\n") == "a"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "exactly one Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "exactly one Host"),
        (b"PRI * HTTP/2.0\r\n\r\n", "HTTP/1.x only"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", "HTTP/1.x only"),
    ],
)
def test_heads_that_cannot_be_routed(head: bytes, message: str) -> None:
    with pytest.raises(BadHead, match=message):
        host_header(head)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return client, server


async def test_a_slow_head_is_peeked_whole_and_left_in_the_socket() -> None:
    client, server = tcp_pair()
    with client, server:
        peek = asyncio.create_task(peek_head(server))
        for part in (HEAD[:5], HEAD[5:30], HEAD[30:] + b"body"):
            await asyncio.sleep(0.02)
            assert not peek.done()
            client.sendall(part)
        assert await asyncio.wait_for(peek, 5) == HEAD
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        server.setblocking(True)
        assert server.recv(1024) == HEAD + b"body", "peeking consumed nothing"


async def test_a_head_cut_short_or_too_large_is_refused() -> None:
    client, server = tcp_pair()
    with client, server:
        client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(BadHead, match="closed before"):
            await asyncio.wait_for(peek_head(server), 5)
    client, server = tcp_pair()
    with client, server:
        client.sendall(b"GET / HTTP/1.1\r\nX: " + b"x" * MAX_HEAD_BYTES)
        with pytest.raises(BadHead) as refused:
            await asyncio.wait_for(peek_head(server), 5)
        assert refused.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


async def test_the_gateway_routes_by_host_and_answers_404_for_no_function() -> None:
    routed: list[tuple[Target, bytes]] = []

    def route(target: Target, client: socket.socket, peer: tuple[str, int]) -> None:
        if target.function != "hello":
            raise NotFound(f"no function named {target.function!r}")
        if target.uploaded_at is not None:
            raise NotFound(f"'hello' has no version uploaded at {target.uploaded_at}")
        client.setblocking(True)
        routed.append((target, client.recv(1024)))
        client.close()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    gateway = Gateway(listener, "localhost", route)
    loop = asyncio.get_running_loop()

    async def exchange(request: bytes) -> bytes:
        with socket.create_connection(listener.getsockname()) as sock:
            sock.sendall(request)
            return await loop.run_in_executor(None, sock.recv, 4096)

    assert await exchange(HEAD) == b""
    assert routed == [(Target("hello", ""), HEAD)], "a function named by Host keeps every path: no prefix"
    by_path = b"GET /function/hello/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert await exchange(by_path) == b""
    assert routed[-1] == (Target("hello", "/function/hello"), by_path)
    answer = await exchange(b"POST /run/hello?version=12 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ") and b"no version uploaded at 12" in answer
    assert b"Host header" not in answer, "a missing version is not a matter of host names"
    answer = await exchange(b"POST /run/hello?version=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"one Unix timestamp" in answer
    answer = await exchange(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"no function named 'nobody'" in answer
    answer = await exchange(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ") and b"127.0.0.1:8000" in answer
    await gateway.close()


async def test_one_peer_sending_heads_slowly_cannot_have_everyone_else_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "MAX_PENDING", 40)
    routed: list[str] = []

    def route(target: Target, client: socket.socket, peer: tuple[str, int]) -> None:
        routed.append(peer[0])
        client.setblocking(True)
        client.recv(1024)
        client.close()

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    gateway = Gateway(listener, "localhost", route)
    loop = asyncio.get_running_loop()
    slow = []
    for _ in range(40):
        sock = socket.create_connection(listener.getsockname())
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
        slow.append(sock)
    await asyncio.sleep(0.2)
    refused = await loop.run_in_executor(None, slow[-1].recv, 4096)
    assert refused.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")

    with socket.create_connection(listener.getsockname(), source_address=("127.0.0.2", 0)) as other:
        other.sendall(HEAD)
        assert await loop.run_in_executor(None, other.recv, 4096) == b""
    assert routed == ["127.0.0.2"], "another peer is served while the first one's heads wait"
    for sock in slow:
        sock.close()
    await gateway.close()


async def test_a_flood_of_unroutable_requests_logs_a_few_short_lines(caplog: pytest.LogCaptureFixture) -> None:
    def route(target: Target, client: socket.socket, peer: tuple[str, int]) -> None:
        raise NotFound(f"no function named {target.function!r}")

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    listener.setblocking(False)
    gateway = Gateway(listener, "localhost", route)
    loop = asyncio.get_running_loop()
    request = b"GET / HTTP/1.1\r\nHost: \x1b[2J" + b"h" * 8000 + b"\r\n\r\n"

    def refused() -> bytes:
        with socket.create_connection(listener.getsockname()) as sock:
            sock.sendall(request)
            return sock.recv(64)

    caplog.set_level(logging.INFO, logger="faasd.gateway")
    for _ in range(100):
        assert (await loop.run_in_executor(None, refused)).startswith(b"HTTP/1.1 404 ")
    await gateway.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gateway refused")]
    assert 1 <= len(lines) <= 25, len(lines)
    assert all(len(line) < 300 for line in lines), lines[0]
