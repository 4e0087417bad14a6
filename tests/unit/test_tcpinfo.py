"""What the kernel says a holder of a connection wrote and read, on real loopback sockets."""

import socket
import time

from faasd.tcpinfo import bytes_read, bytes_written


def connected() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def until_queued(sock: socket.socket, size: int) -> None:
    deadline = time.monotonic() + 5
    while len(sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)) < size:
        assert time.monotonic() < deadline, "the bytes never arrived"
        time.sleep(0.01)


def test_bytes_read_counts_what_was_taken_from_the_queue_not_what_arrived() -> None:
    client, accepted = connected()
    with client, accepted:
        assert bytes_read(accepted) == 0
        client.sendall(b"GET / HTTP/1.1\r\n")
        until_queued(accepted, 16)
        assert bytes_read(accepted) == 0, "arrived, but nobody read it"
        assert accepted.recv(4) == b"GET "
        assert bytes_read(accepted) == 4


def test_bytes_written_counts_what_any_holder_sent() -> None:
    client, accepted = connected()
    with client, accepted:
        assert bytes_written(accepted) == 0
        accepted.sendall(b"HTTP/1.1 200 OK\r\n")
        assert bytes_written(accepted) == 17
