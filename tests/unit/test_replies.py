"""The daemon's own answers reach a client that reads to EOF whole, then a FIN: never a reset.

Real TCP sockets on loopback: the reset a close with unread input causes is the kernel's.
"""

from __future__ import annotations

import asyncio
import socket
from http import HTTPStatus

import pytest

from faasd.handoff import close_client
from faasd.replies import error_response, send_error

# A request whose body nobody reads: the answer comes before it is consumed.
REQUEST = b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 65536\r\n\r\n" + b"x" * 65536


def read_to_eof(sock: socket.socket) -> bytes:
    """What a client reading to EOF gets; a reset raises ``ConnectionResetError``."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


async def answered(client_sends: bytes, *, client_closes: bool) -> bytes:
    """Serve one connection with a 502 and a close, as the daemon does; return what the client read."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        client = socket.create_connection(server.getsockname())
        with client:
            client.sendall(client_sends)
            accepted, _ = await loop.sock_accept(server)
            await asyncio.sleep(0.05)  # the request is in the daemon's socket, unread
            reading = asyncio.create_task(asyncio.to_thread(read_to_eof, client))
            if client_closes:
                reading.add_done_callback(lambda _: client.close())
            await send_error(accepted, HTTPStatus.BAD_GATEWAY, "no answer")
            close_client(accepted)
            return await reading


@pytest.mark.parametrize("client_closes", [True, False], ids=["client closes at eof", "client keeps it open"])
async def test_a_client_reading_to_eof_gets_the_whole_answer_and_a_fin(client_closes: bool) -> None:
    assert await answered(REQUEST, client_closes=client_closes) == error_response(HTTPStatus.BAD_GATEWAY, "no answer")


async def test_a_client_that_sends_without_end_is_cut_off_after_the_drain() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        with socket.create_connection(server.getsockname()) as client:
            client.setblocking(False)
            accepted, _ = await loop.sock_accept(server)

            async def flood() -> None:
                with pytest.raises(OSError):  # reset once the daemon stops draining
                    while True:
                        await loop.sock_sendall(client, b"x" * 65536)

            flooding = asyncio.create_task(flood())
            await asyncio.wait_for(send_error(accepted, HTTPStatus.SERVICE_UNAVAILABLE, "busy"), 5)
            close_client(accepted)
            await asyncio.wait_for(flooding, 5)
