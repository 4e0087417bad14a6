"""What the handler wrote to its client, read from the kernel rather than guessed.

The daemon keeps its own descriptor of every handed-over connection. ``TCP_INFO`` on it
reports the socket's counters, whoever wrote: ``tcpi_bytes_sent`` (Linux 4.19+) counts
bytes that left, ``tcpi_notsent_bytes`` those still queued. Their sum is zero exactly when
the handler never wrote a byte, which is when the daemon may still answer the client itself.
``tcpi_bytes_received`` less what is still queued (``SIOCINQ``) is what the handler read.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios

# Offsets in struct tcp_info (include/uapi/linux/tcp.h).
NOTSENT_BYTES = struct.Struct("=I"), 144
BYTES_RECEIVED = struct.Struct("=Q"), 128
BYTES_SENT = struct.Struct("=Q"), 200
TCP_INFO_BYTES = 232


def bytes_written(sock: socket.socket) -> int | None:
    """Bytes written to ``sock`` so far, by any holder of it; ``None`` if the kernel cannot tell."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    except OSError:
        return None
    total = 0
    for field, offset in (NOTSENT_BYTES, BYTES_SENT):
        if len(info) < offset + field.size:
            return None
        total += field.unpack_from(info, offset)[0]
    return total


def bytes_read(sock: socket.socket) -> int | None:
    """Bytes of the client's that some holder of ``sock`` has read; ``None`` if the kernel cannot tell.

    The queue is read first: bytes arriving between the two reads can only make the figure
    larger, never hide a read.
    """
    try:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    except OSError:
        return None
    field, offset = BYTES_RECEIVED
    if len(info) < offset + field.size:
        return None
    return int(field.unpack_from(info, offset)[0]) - queued
