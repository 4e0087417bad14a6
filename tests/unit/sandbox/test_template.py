"""The template's side of the channel: its setup message and what its answer means."""

from __future__ import annotations

import json
import os
import socket

import pytest

from faasd.limits import MIB, Limits
from faasd.sandbox.template import NOT_A_TEMPLATE, read_reply, receive_with_pid, setup_message


def test_the_setup_is_a_json_line_then_the_filter() -> None:
    header, _, bpf = setup_message(Limits(tmp_bytes=128 * MIB), b"\x00" * 16).partition(b"\n")
    assert json.loads(header) == {"tmp_bytes": 128 * MIB, "shm_bytes": 64 * MIB}, "/dev/shm as a container's"
    assert bpf == b"\x00" * 16
    assert json.loads(setup_message(Limits(tmp_bytes=0), b"").partition(b"\n")[0])["shm_bytes"] == 0


@pytest.mark.parametrize(
    ("reply", "meaning"),
    [
        (b'{"template": "ready"}', None),
        (b'{"template": "refused", "reason": "an ASGI app cannot be a template"}', "refused"),
        (b"HTTP/1.1 200 OK\r\n\r\nhello", NOT_A_TEMPLATE),  # a classic handler answering its 'client'
        (b'{"template": "maybe"}', NOT_A_TEMPLATE),
        (b"[]", NOT_A_TEMPLATE),
        (b"\xff\xfe", NOT_A_TEMPLATE),
    ],
)
def test_only_the_sdks_answer_makes_a_template(reply: bytes, meaning: str | None) -> None:
    result = read_reply(reply)
    if meaning == "refused":
        assert result is not None and "an ASGI app cannot be a template" in result
    else:
        assert result == meaning


async def test_a_message_comes_with_the_pid_of_the_process_that_sent_it() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        child = os.fork()
        if child == 0:  # another process than the one that made the pair
            theirs.send(b"started")
            os._exit(0)
        assert await receive_with_pid(ours, 16) == (b"started", child)
        os.waitpid(child, 0)
        theirs.close()
        assert await receive_with_pid(ours, 16) == (b"", None), "the other end closed"
