"""The few HTTP answers the daemon itself writes, when no handler could answer the client.

Each one ends with the staged close of RFC 9112 §9.6: the daemon half-closes after its last
byte and reads what the client still sends, briefly, before it closes. Closing a socket with
unread input (the request nobody read) makes the kernel send a reset, which can discard the
answer before the client has read it; a half-close sends a FIN after it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from http import HTTPStatus

# A client that does not read its answer must not hold a connection slot.
SEND_TIMEOUT_SECONDS = 1.0
# How long, and how much, the client's unread input is drained after the half-close.
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 256 * 1024

# The header that names the connection's request id, as its lines in ``faas logs`` do.
REQUEST_ID_HEADER = "X-Request-Id"


def error_response(
    status: HTTPStatus, message: str, retry_after: int | None = None, request_id: str | None = None
) -> bytes:
    """A complete HTTP/1.1 answer with a short JSON body that closes the connection; with
    ``request_id``, in the body and a header, so a client can find its lines in the log."""
    fields = {"error": message} if request_id is None else {"error": message, "request_id": request_id}
    body = json.dumps(fields).encode() + b"\n"
    headers = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        headers.append(f"Retry-After: {retry_after}")
    if request_id is not None:
        headers.append(f"{REQUEST_ID_HEADER}: {request_id}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def send_error(
    client: socket.socket,
    status: HTTPStatus,
    message: str,
    retry_after: int | None = None,
    request_id: str | None = None,
) -> None:
    """Send ``error_response`` to ``client`` and half-close it; a client that went away is no error.

    The caller closes ``client`` afterwards: by then its unread input has been drained.
    """
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    with contextlib.suppress(OSError, TimeoutError):
        data = error_response(status, message, retry_after, request_id)
        await asyncio.wait_for(loop.sock_sendall(client, data), SEND_TIMEOUT_SECONDS)
        client.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(_drain(loop, client), DRAIN_SECONDS)


async def _drain(loop: asyncio.AbstractEventLoop, client: socket.socket) -> None:
    """Read and drop what ``client`` sends until it closes, at most ``DRAIN_BYTES``."""
    left = DRAIN_BYTES
    while left > 0 and (chunk := await loop.sock_recv(client, min(left, 64 * 1024))):
        left -= len(chunk)
