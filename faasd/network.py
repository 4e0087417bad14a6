"""Loopback addresses and listening sockets of functions.

Each function owns one address on ``lo`` (label ``lo:faas``, so ``ip addr`` shows whose it is)
and one listening TCP socket on it. Netlink is driven through pyroute2's asyncio API.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from faasd.errors import Conflict, RuntimeFailure

LABEL = "lo:faas"
LISTEN_BACKLOG = 1024


class Aliases:
    """Adds and removes faasd's addresses on the loopback interface."""

    def __init__(self) -> None:
        self._ipr = AsyncIPRoute()
        self._lo = 0

    async def open(self) -> None:
        """Find ``lo``; must be awaited before the other methods."""
        (self._lo,) = await self._ipr.link_lookup(ifname="lo")

    def close(self) -> None:
        self._ipr.close()

    async def add(self, ip: ipaddress.IPv4Address) -> None:
        """Add ``ip``/32 to ``lo``; an address that is already there is fine."""
        try:
            await self._ipr.addr("add", index=self._lo, address=str(ip), prefixlen=32, label=LABEL)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise RuntimeFailure(f"cannot add {ip} to lo: {exc}") from exc

    async def remove(self, ip: ipaddress.IPv4Address) -> None:
        """Remove ``ip`` from ``lo``; an address that is already gone is fine."""
        try:
            await self._ipr.addr("del", index=self._lo, address=str(ip), prefixlen=32)
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise RuntimeFailure(f"cannot remove {ip} from lo: {exc}") from exc

    async def present(self) -> set[ipaddress.IPv4Address]:
        """The addresses on ``lo`` that carry faasd's label."""
        return {
            ipaddress.IPv4Address(a.get_attr("IFA_ADDRESS"))
            async for a in await self._ipr.get_addr(index=self._lo, label=LABEL)
        }


def open_listener(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``ip:port``."""
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(ip), port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise Conflict(f"cannot listen on {ip}:{port}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock
