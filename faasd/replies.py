"""The few HTTP answers the daemon itself writes, when no handler could answer the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from http import HTTPStatus

# A client that does not read its answer must not hold a connection slot.
SEND_TIMEOUT_SECONDS = 1.0


def error_response(status: HTTPStatus, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer with a short JSON body that closes the connection."""
    body = json.dumps({"error": message}).encode() + b"\n"
    headers = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        headers.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def send_error(client: socket.socket, status: HTTPStatus, message: str, retry_after: int | None = None) -> None:
    """Send ``error_response`` to ``client``; a client that went away is no error."""
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    with contextlib.suppress(OSError, TimeoutError):
        data = error_response(status, message, retry_after)
        await asyncio.wait_for(loop.sock_sendall(client, data), SEND_TIMEOUT_SECONDS)
