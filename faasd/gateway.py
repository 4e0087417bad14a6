"""One port for every function: each connection goes where its HTTP ``Host`` header says, or
else its path (``faasd.paths``: ``/function/NAME/...``, ``/invoke/NAME``, ``/run/PATH``).

``hello.localhost:8000`` (or a bare ``hello``) reaches function ``hello``. The header is read
with ``MSG_PEEK``, so the request stays in the socket: the handler reads it whole, and the
connection is handed over exactly as one accepted on the function's own address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus

from faasd import paths
from faasd.daemonlog import Throttle, clipped
from faasd.errors import FaasError
from faasd.registry import NAME_PATTERN
from faasd.replies import send_error

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
# Connections still sending their head at once; more are refused rather than held. One peer
# may hold only a few of them, so that a slow sender cannot have everyone else refused.
MAX_PENDING = 1024
MAX_PENDING_PER_PEER = 32


class BadHead(Exception):
    """The request head cannot be routed; ``status`` and the message go back to the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def host_header(head: bytes) -> str:
    """The one ``Host`` value of a complete HTTP/1.x request head."""
    lines = head.split(b"\r\n")
    if not lines[0].rstrip().endswith((b"HTTP/1.1", b"HTTP/1.0")):
        raise BadHead(HTTPStatus.BAD_REQUEST, "the gateway speaks HTTP/1.x only")
    fields = (line.partition(b":") for line in lines[1:])
    hosts = [value.strip() for name, sep, value in fields if sep and name.lower() == b"host"]
    if len(hosts) != 1:
        # Two Host headers could route one way here and be read another way by the handler.
        raise BadHead(HTTPStatus.BAD_REQUEST, "the request needs exactly one Host header")
    return hosts[0].decode("ascii", "replace")


def function_name(host: str, domain: str) -> str | None:
    """The function ``host`` names: ``NAME.DOMAIN`` or ``NAME``, port ignored; else None."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().removesuffix(".")
    suffix = f".{domain}" if domain else None
    if suffix and name.endswith(suffix):
        name = name[: -len(suffix)]
    return name if NAME_PATTERN.fullmatch(name) else None


async def peek_head(sock: socket.socket) -> bytes:
    """Wait until ``sock`` holds a whole request head, and return it without consuming it.

    ``SO_RCVLOWAT`` makes the socket readable only once it holds more than was already seen,
    so waiting for the rest of a slow head costs no polling.
    """
    loop = asyncio.get_running_loop()
    wanted = 1
    try:
        while True:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
            await _readable(loop, sock)
            data = sock.recv(MAX_HEAD_BYTES, socket.MSG_PEEK)
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                return data[: end + 4]
            if len(data) >= MAX_HEAD_BYTES:
                raise BadHead(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "the request head is too large")
            if len(data) < wanted:
                raise BadHead(HTTPStatus.BAD_REQUEST, "the connection closed before the request head ended")
            wanted = len(data) + 1
    finally:
        # The setting travels with the socket: the handler must get a plain one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


Route = Callable[[paths.Target, socket.socket, tuple[str, int]], None]


class Gateway:
    """Accepts on the gateway's socket and gives each connection to the function it names.

    ``route(target, client, peer)`` takes the connection over (as the function's own listener
    would) or raises ``FaasError`` (``NotFound``) when there is no such function or version. A
    function named by ``Host`` is routed with an empty prefix: it keeps every path of its own.
    """

    def __init__(self, sock: socket.socket, domain: str, route: Route) -> None:
        self._sock = sock
        self._domain = domain
        self._route = route
        self._pending: set[asyncio.Task[None]] = set()
        self._heads_by_peer: Counter[str] = Counter()  # connections still sending their head, by address
        # Anyone who can connect causes these lines: the log grows no faster than the throttle.
        self._refusals = Throttle(log)
        self._accepting = asyncio.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(self._sock)
            except OSError as exc:
                log.warning("gateway accept failed error=%s", exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._admit(client, peer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _admit(self, client: socket.socket, peer: tuple[str, int]) -> None:
        """Read the head and route the connection, or answer why not; the client is closed unless routed."""
        target = None
        try:
            head = await self._head(client, peer[0])
            host = host_header(head)
            name = function_name(host, self._domain)
            target = None if name is None or name == self._domain else paths.Target(name, "")
            if target is None:  # no function by host: maybe one by path
                if paths.is_health(head):
                    await self._answer(client, len(head), paths.HEALTH_RESPONSE)
                    return
                target = paths.path_route(head)
            if target is None:
                raise BadHead(HTTPStatus.NOT_FOUND, f"no function is reached as {host!r}: {self._host_forms()}")
            self._route(target, client, peer)
        except BadHead as exc:
            await self._refuse(client, peer, exc.status, exc.message)
        except FaasError as exc:
            # A version go-faas's ?version= names that is not there is no matter of host forms.
            unknown = exc.status == HTTPStatus.NOT_FOUND and (target is None or target.uploaded_at is None)
            message = f"{exc.message}: {self._host_forms()}" if unknown else exc.message
            await self._refuse(client, peer, HTTPStatus(exc.status), message)
        except OSError as exc:
            self._refusals.log(logging.INFO, "gateway connection lost peer=%s:%s error=%s", *peer, exc)
            client.close()
        except BaseException:
            client.close()
            raise

    def _host_forms(self) -> str:
        """The Host values the gateway routes, with this gateway's own address in the examples."""
        host, port = self._sock.getsockname()[:2]
        return (
            f"the Host header names a function as NAME.{self._domain} or NAME (a port after either is ignored), "
            f"e.g. curl http://NAME.{self._domain}:{port}/ or curl -H 'Host: NAME' http://{host}:{port}/"
        )

    async def _head(self, client: socket.socket, address: str) -> bytes:
        """The request head, once whole; at most ``MAX_PENDING`` wait at once, ``MAX_PENDING_PER_PEER``
        of them from one address."""
        if self._heads_by_peer.total() >= MAX_PENDING:
            raise BadHead(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections are still sending their request")
        if self._heads_by_peer[address] >= MAX_PENDING_PER_PEER:
            raise BadHead(HTTPStatus.TOO_MANY_REQUESTS, "too many of your connections are still sending their request")
        self._heads_by_peer[address] += 1
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_SECONDS):
                return await peek_head(client)
        except TimeoutError:
            raise BadHead(HTTPStatus.REQUEST_TIMEOUT, "the request head did not arrive in time") from None
        finally:
            self._heads_by_peer[address] -= 1
            if not self._heads_by_peer[address]:
                del self._heads_by_peer[address]

    async def _answer(self, client: socket.socket, head_bytes: int, response: bytes) -> None:
        """Take the request head (only peeked so far: unread input would make the close a reset),
        send an answer of the gateway's own and close."""
        with client:
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.recv(head_bytes)
                await asyncio.get_running_loop().sock_sendall(client, response)
                client.shutdown(socket.SHUT_WR)

    async def _refuse(self, client: socket.socket, peer: tuple[str, int], status: HTTPStatus, message: str) -> None:
        self._refusals.log(
            logging.INFO, "gateway refused peer=%s:%s status=%d reason=%s", *peer, status.value, clipped(message)
        )
        with client:
            await send_error(client, status, message)

    async def close(self) -> None:
        """Stop accepting and drop connections still sending their head."""
        self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(self._accepting, *self._pending, return_exceptions=True)
        self._sock.close()
