"""The node-ipc variant of the handoff: Node's framing, and the daemon's end over a real socketpair."""

import asyncio
import json
import socket

import pytest

from faasd.channel import (
    MAX_LINE,
    Channel,
    ProtocolError,
    encode_handle,
    is_ready,
    read_lines,
    uses_channel,
)
from faasd.handoff import encode_metadata


def test_the_handle_frame_is_one_json_line_in_nodes_shape_around_the_v1_message() -> None:
    payload = encode_metadata({"id": "abc", "function": "hello", "more": True})
    frame = encode_handle(payload)
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert json.loads(frame) == {
        "cmd": "NODE_HANDLE",
        "type": "net.Socket",
        "msg": {"v": 1, "id": "abc", "function": "hello", "more": True},
    }


def test_lines_are_split_and_a_line_not_yet_ended_is_kept() -> None:
    messages, rest = read_lines(b'{"cmd":"NODE_HANDLE_ACK"}\n{"faas":"ready"}\n{"fa')
    assert messages == [{"cmd": "NODE_HANDLE_ACK"}, {"faas": "ready"}] and rest == b'{"fa'
    assert read_lines(b"") == ([], b"")


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"x" * (MAX_LINE + 1), "over 1024 bytes"),
        (b"y" * (MAX_LINE + 1) + b"\n", "over 1024 bytes"),
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'"ready"\n', "not a JSON object"),
    ],
)
def test_what_a_hostile_handler_sends_is_refused(data: bytes, said: str) -> None:
    with pytest.raises(ProtocolError, match=said):
        read_lines(data)


def test_acks_are_skipped_a_ready_counts_and_anything_else_breaks_the_protocol() -> None:
    assert is_ready([{"cmd": "NODE_HANDLE_ACK"}, {"faas": "ready"}]) is True
    assert is_ready([{"cmd": "NODE_HANDLE_ACK"}]) is False
    assert is_ready([]) is False
    for broken in ([{"cmd": "NODE_HANDLE_NACK"}], [{"faas": "ready"}, {"faas": "ready"}], [{"hello": 1}]):
        with pytest.raises(ProtocolError):
            is_ready(broken)


def test_the_variant_is_the_images_choice() -> None:
    assert uses_channel(("PATH=/bin", "FAAS_HANDOFF=node-ipc"))
    assert not uses_channel(("PATH=/bin",)) and not uses_channel(["FAAS_HANDOFF=node-ipcx"])


async def node_side(channel: Channel) -> socket.socket:
    """The container's end, as runc would give it to the handler (the daemon's copy then closes)."""
    theirs = socket.socket(fileno=socket.dup(channel.container_end()))
    channel.started()
    return theirs


def test_ready_then_a_client_socket_with_its_metadata_then_ready_again() -> None:
    async def scenario() -> None:
        channel = Channel()
        node = await node_side(channel)
        client, peer = socket.socketpair()
        client.setblocking(False)  # as asyncio accepted it
        node.sendall(b'{"faas":"ready"}\n')
        handler = await asyncio.wait_for(channel.wait_for_handler(), 5)
        channel.hand_over(handler, client, encode_metadata({"id": "r1", "more": True}))
        frame, fds, _, _ = socket.recv_fds(node, 4096, 4)
        assert json.loads(frame)["msg"]["id"] == "r1" and len(fds) == 1
        with socket.socket(fileno=fds[0]) as received:
            received.sendall(b"ping")
            assert peer.recv(4) == b"ping"
        assert not client.getblocking(), "the client stays non-blocking: libuv reads it so"
        # Node acks the handle; the handler serves the connection and is ready again, in two writes.
        node.sendall(b'{"cmd":"NODE_HANDLE_ACK"}\n{"faas"')
        waiting = asyncio.ensure_future(channel.wait_for_handler())
        await asyncio.sleep(0.05)
        assert not waiting.done(), "half a line is not ready"
        node.sendall(b':"ready"}\n')
        (await asyncio.wait_for(waiting, 5)).close()
        channel.close()
        assert node.recv(1) == b"", "closed: the handler sees the channel end"
        for sock in (node, client, peer):
            sock.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("said", [b'{"cmd":"NODE_HANDLE_NACK"}\n', b"garbage\n", b"z" * 5000, b""])
def test_a_handler_that_hangs_up_or_breaks_the_protocol_is_never_ready(said: bytes) -> None:
    async def scenario() -> None:
        channel = Channel()
        node = await node_side(channel)
        if said:
            node.sendall(said + b'{"faas":"ready"}\n')
        else:
            node.close()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(channel.wait_for_handler(), 0.3)
        channel.close()
        node.close()

    asyncio.run(scenario())


def test_fds_a_handler_sends_the_daemon_are_dropped() -> None:
    async def scenario() -> None:
        channel = Channel()
        node = await node_side(channel)
        left, right = socket.socketpair()
        socket.send_fds(node, [b'{"faas":"ready"}\n'], [left.fileno()])
        left.close()
        (await asyncio.wait_for(channel.wait_for_handler(), 5)).close()
        right.setblocking(False)
        assert right.recv(1) == b"", "the only other copy of the sent socket was closed with the message"
        channel.close()
        for sock in (node, right):
            sock.close()

    asyncio.run(scenario())
