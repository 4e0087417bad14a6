"""Protocol v1 of the control socket: one JSON message and one fd, then the daemon is done.

The codec is pure. The socket side is a thin layer: a per-container listening unix socket.
A handler that connects is *waiting*; the daemon sends it the metadata with the client's TCP
socket in ``SCM_RIGHTS`` when a connection comes. Once the container's last connection is
sent the socket closes, so a further connect to ``/control.sock`` reaches nothing. A container
that may serve more (``reuse``) is told so in the metadata (``"more": true``) and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from faasd.errors import FaasError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1024


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """The wire form of one metadata message: compact UTF-8 JSON of at most 1024 bytes."""
    payload = json.dumps({"v": PROTOCOL_VERSION, **metadata}, separators=(",", ":")).encode()
    if len(payload) > MAX_MESSAGE_BYTES:
        raise FaasError(f"handoff metadata is {len(payload)} bytes, over {MAX_MESSAGE_BYTES}")
    return payload


def close_client(client: socket.socket) -> None:
    """Close the daemon's copy of a client socket a handler was given, never waiting.

    ``SO_LINGER`` belongs to the socket, not to one fd: a handler may set it (on, N s) and fill
    the send buffer, and the last ``close`` of the socket would then wait up to N s for unsent
    bytes. Lingering is turned off first, so the close returns at once and the kernel still
    sends what is queued. A handler that still runs could set it again in between: the caller
    closes off the loop then (see ``dispatch``).
    """
    with contextlib.suppress(OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
    client.close()


def decode_metadata(payload: bytes) -> dict[str, Any]:
    """The inverse of ``encode_metadata``; what a handler does with the message it receives."""
    value = json.loads(payload.decode())
    if not isinstance(value, dict) or value.get("v") != PROTOCOL_VERSION:
        raise ValueError("not a protocol v1 metadata message")
    return value


class ControlSocket:
    """The listening end of one container's ``/control.sock``."""

    def __init__(self, path: Path, owner: tuple[int, int]) -> None:
        """Listen at ``path``; only the host ``(uid, gid)`` the handler runs as may connect."""
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(str(path))
            # connect(2) needs write permission on the socket: the handler's user alone has it.
            os.chown(path, *owner)
            os.chmod(path, 0o600)
            self._sock.listen(1)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    async def wait_for_handler(self) -> socket.socket:
        """The handler's end, once it connects: it then waits for a connection."""
        handler, _ = await asyncio.get_running_loop().sock_accept(self._sock)
        return handler

    @staticmethod
    def hand_over(handler: socket.socket, client: socket.socket, payload: bytes) -> None:
        """Send ``payload`` with ``client``'s fd to a waiting ``handler``, and hang up on it."""
        # asyncio accepted the client non-blocking, and that flag travels with the fd: clear it,
        # so a classic handler's plain read() waits for the request instead of failing EAGAIN.
        client.setblocking(True)
        with handler:
            # One small message on a fresh socket fits its buffer: sendmsg does not block.
            socket.send_fds(handler, [payload], [client.fileno()])

    def close(self) -> None:
        self._sock.close()
