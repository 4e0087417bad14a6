import asyncio
import json
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from faasd.errors import FaasError
from faasd.handoff import MAX_MESSAGE_BYTES, ControlSocket, close_client, decode_metadata, encode_metadata


def test_codec_round_trip_is_compact_json_v1() -> None:
    payload = encode_metadata({"id": "abc", "function": "hello", "version": 2, "deadline": 1, "peer": "127.0.0.1:5"})
    assert payload.startswith(b'{"v":1,')
    assert decode_metadata(payload)["function"] == "hello"


def test_codec_refuses_oversized_messages() -> None:
    with pytest.raises(FaasError, match="over 1024"):
        encode_metadata({"peer": "x" * MAX_MESSAGE_BYTES})


# The handler's host ids; the test's own, so it runs without root.
OWNER = (os.getuid(), os.getgid())


def test_decode_refuses_other_versions() -> None:
    with pytest.raises(ValueError):
        decode_metadata(json.dumps({"v": 2}).encode())


def test_hand_over_sends_one_message_with_the_client_fd_to_the_waiting_handler(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    async def scenario() -> None:
        control = ControlSocket(path, owner=OWNER)
        assert path.stat().st_mode & 0o777 == 0o600
        assert (path.stat().st_uid, path.stat().st_gid) == OWNER
        left, right = socket.socketpair()
        handler = socket.socket(socket.AF_UNIX)
        handler.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(handler, str(path))
        waiting = await control.wait_for_handler()
        control.hand_over(waiting, left, b'{"v":1}')
        message, fds, _, _ = socket.recv_fds(handler, MAX_MESSAGE_BYTES, 4)
        assert message == b'{"v":1}' and len(fds) == 1
        assert handler.recv(1) == b"", "the daemon hung up after the one message"
        with socket.socket(fileno=fds[0]) as received:
            received.sendall(b"ping")
            assert right.recv(4) == b"ping"
        control.close()
        second = socket.socket(socket.AF_UNIX)
        with pytest.raises(OSError):
            second.connect(str(path))
        for s in (left, right, handler, second):
            s.close()

    asyncio.run(scenario())


def test_the_handed_socket_arrives_blocking(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    async def scenario() -> None:
        control = ControlSocket(path, owner=OWNER)
        left, right = socket.socketpair()
        left.setblocking(False)
        handler = socket.socket(socket.AF_UNIX)
        handler.setblocking(False)
        await asyncio.get_running_loop().sock_connect(handler, str(path))
        control.hand_over(await control.wait_for_handler(), left, b'{"v":1}')
        _, fds, _, _ = socket.recv_fds(handler, MAX_MESSAGE_BYTES, 1)
        with socket.socket(fileno=fds[0]) as received:
            assert received.getblocking()
        for s in (left, right, handler):
            s.close()

    asyncio.run(scenario())


LINGER_SECONDS = 8


def test_a_linger_the_handler_set_never_makes_the_daemons_close_wait() -> None:
    """The handler sets SO_LINGER (on, 8 s), fills the send buffer of a client that does not
    read, and is gone: the daemon's close, the socket's last, must not wait for those bytes."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        daemons, _ = server.accept()
        with socket.socket(fileno=os.dup(daemons.fileno())) as handlers:  # the copy sent over SCM_RIGHTS
            handlers.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, LINGER_SECONDS))
            handlers.setblocking(False)
            with pytest.raises(BlockingIOError):
                while True:
                    handlers.send(b"x" * 65536)
        closing = threading.Thread(target=close_client, args=(daemons,), daemon=True)
        closing.start()
        closing.join(LINGER_SECONDS / 2)
        assert not closing.is_alive(), "the close waited for the client to read"
