"""Handler protocol v1, ``node-ipc`` variant: the handoff over Node's own IPC channel.

Node cannot take an fd from a unix socket it connected itself (a ``net.Socket`` reads no
``SCM_RIGHTS``); the one way it receives a socket is the IPC channel a parent sets up. So for
an image whose ``Env`` says ``FAAS_HANDOFF=node-ipc`` the daemon is that parent: the container
gets one end of a socketpair as fd 3 (``runc run --preserve-fds 1``; runc copies stdio through
pipes, which carry no fd) and ``NODE_CHANNEL_FD=3``, and has no ``/control.sock``. Then:

1. The handler, ready for a connection, sends ``{"faas":"ready"}`` (``process.send``): one JSON
   line, what waiting on ``/control.sock`` is in v1.
2. The daemon sends Node's framing of a handle: the line
   ``{"cmd":"NODE_HANDLE","type":"net.Socket","msg":METADATA}`` with the client's TCP socket in
   ``SCM_RIGHTS``; METADATA is v1's message. Node answers ``{"cmd":"NODE_HANDLE_ACK"}``, which
   the daemon skips, and emits ``process.on("message", (metadata, socket) => ...)``.
3. Under ``reuse`` (``"more": true``) the handler sends ``ready`` again for the next connection.
   After the last one the daemon closes its end: the handler sees the channel end.

Everything else is v1's. The codec is pure; ``Channel`` is the daemon's end of one container's
channel. What the handler sends is not trusted: lines are bounded, fds it sends are dropped.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from typing import Any

HANDOFF_ENV = "FAAS_HANDOFF"
NODE_IPC = "node-ipc"
CHANNEL_FD = 3  # where the container finds its end: the first fd after stdio
CHANNEL_ENV = f"NODE_CHANNEL_FD={CHANNEL_FD}"
READY = "ready"
ACK = "NODE_HANDLE_ACK"
MAX_LINE = 1024  # a ready or an ack is a few bytes; a handler that says more breaks the protocol
READ_BYTES = 4096


class ProtocolError(Exception):
    """The handler sent something the variant does not allow: it will never be ready."""


def uses_channel(env: tuple[str, ...] | list[str]) -> bool:
    """Whether an image's ``Env`` selects the node-ipc variant."""
    return f"{HANDOFF_ENV}={NODE_IPC}" in env


def encode_handle(payload: bytes) -> bytes:
    """Node's framing of one v1 metadata message (``handoff.encode_metadata``) sent with a socket."""
    return b'{"cmd":"NODE_HANDLE","type":"net.Socket","msg":' + payload + b"}\n"


def read_lines(buffer: bytes) -> tuple[list[Mapping[str, Any]], bytes]:
    """The whole lines in ``buffer`` as JSON objects, and what is left of a line not yet ended.

    ``ProtocolError`` for a line that is not a JSON object, or that runs over ``MAX_LINE``.
    """
    *lines, rest = buffer.split(b"\n")
    if len(rest) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
        raise ProtocolError(f"a line of over {MAX_LINE} bytes on the channel")
    messages: list[Mapping[str, Any]] = []
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            raise ProtocolError(f"not JSON on the channel: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise ProtocolError(f"not a JSON object on the channel: {line[:80]!r}")
        messages.append(message)
    return messages, rest


def is_ready(messages: list[Mapping[str, Any]]) -> bool:
    """Whether these messages, in order, leave the handler ready: acks are skipped, a ready
    counts, anything else (a ``NODE_HANDLE_NACK``: the socket never arrived) breaks the protocol."""
    ready = False
    for message in messages:
        if message.get("cmd") == ACK:
            continue
        if message.get("faas") != READY or ready:
            raise ProtocolError(f"unexpected message on the channel: {json.dumps(message)[:80]}")
        ready = True
    return ready


class Channel:
    """The daemon's end of one container's IPC channel; the container's end goes to runc as fd 3."""

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.setblocking(False)
        self._theirs: socket.socket | None = theirs
        self._buffer = b""

    def container_end(self) -> int:
        """The fd to hand runc, until ``started`` closes the daemon's copy of it."""
        assert self._theirs is not None, "the container's end was given away already"
        return self._theirs.fileno()

    def started(self) -> None:
        """runc holds the container's end now (or failed to start): the daemon's copy goes."""
        if self._theirs is not None:
            self._theirs.close()
            self._theirs = None

    async def wait_for_handler(self) -> socket.socket:
        """Return once the handler said it is ready: a socket to hand its connection over on.

        A handler that hangs up or breaks the protocol is never ready: this then waits until the
        caller gives up (the container's exit or the start timeout tells it what happened).
        """
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, READ_BYTES)  # recv: any fds it sent are dropped
            if not data:
                break
            try:
                messages, self._buffer = read_lines(self._buffer + data)
                if is_ready(messages):
                    if self._buffer:
                        raise ProtocolError("the handler said more after it was ready")
                    return self._sock.dup()  # closed by hand_over; the channel stays for a next ready
            except ProtocolError:
                break
        never: asyncio.Future[socket.socket] = loop.create_future()
        return await never

    @staticmethod
    def hand_over(handler: socket.socket, client: socket.socket, payload: bytes) -> None:
        """Send ``payload`` framed as Node's ``NODE_HANDLE`` with ``client``'s fd to a ready handler.

        The client stays non-blocking, as asyncio accepted it: libuv reads it that way.
        """
        with handler:
            # One small message on a socket whose buffer holds at most an unread ack: no block.
            socket.send_fds(handler, [encode_handle(payload)], [client.fileno()])

    def close(self) -> None:
        """No further connection goes this way; a ``hand_over`` already begun still completes."""
        self.started()
        self._sock.close()
