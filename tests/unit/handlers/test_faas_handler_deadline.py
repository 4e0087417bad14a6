"""The daemon kills a container at its deadline: the SDK stops taking requests in time, so that
no request is cut off mid-way. The deadline reaches the handler in the handoff metadata."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.handlers.harness import faas_handler, handed_over, in_thread

MARGIN = faas_handler.DEADLINE_MARGIN
Deadline = faas_handler._Deadline


def unix_ms(seconds_from_now: float) -> int:
    return int((time.time() + seconds_from_now) * 1000)


def ask(sock: socket.socket, path: str = "/") -> tuple[int, bytes, str | None]:
    """One GET on ``sock``, left open whatever the response says; its status, body and Connection."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: fn\r\n\r\n".encode())
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read(), response.getheader("Connection")


def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Takes a tenth of a second per request, as an app that does some work."""
    time.sleep(0.1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


@pytest.mark.parametrize("deadline", [None, "soon", True, [1], {}])
def test_metadata_without_a_numeric_deadline_sets_none(deadline: object) -> None:
    metadata = {} if deadline is None else {"deadline": deadline}
    assert Deadline.from_metadata(metadata).at is None


def test_the_deadline_is_read_onto_the_monotonic_clock() -> None:
    at = Deadline.from_metadata({"deadline": unix_ms(30)}).at
    assert at is not None and abs(at - (time.monotonic() + 30)) < 0.1


@pytest.mark.parametrize(
    ("left", "slowest", "this_one", "room"),
    [
        (10.0, 0.0, 0.0, True),
        (10.0, 9.0, 0.0, True),
        (10.0, 9.6, 0.0, False),  # the slowest so far would not end MARGIN before the deadline
        (10.0, 0.0, 9.6, False),  # nor would another as slow as this one
        (MARGIN - 0.1, 0.0, 0.0, False),
        (-1.0, 0.0, 0.0, False),
    ],
)
def test_room_for_another_request(left: float, slowest: float, this_one: float, room: bool) -> None:
    deadline = Deadline(time.monotonic() + left)
    deadline.slowest = slowest
    assert deadline.room_for_another(time.monotonic() - this_one) is room


def test_without_a_deadline_there_is_always_room() -> None:
    deadline = Deadline(None)
    deadline.slowest = 1e9
    assert deadline.room_for_another(0.0) and deadline.request_cutoff() is None and deadline.bounded(1.0) == 1.0


def test_the_wait_for_a_request_and_the_close_leave_the_margin_free() -> None:
    at = time.monotonic() + 10
    deadline = Deadline(at)
    deadline.slowest = 2.0
    assert deadline.request_cutoff() == at - MARGIN - 2.0
    assert deadline.bounded(1.0) == 1.0
    near = Deadline(time.monotonic() + MARGIN)
    assert 0 < near.bounded(1.0) <= MARGIN / 2 and Deadline(time.monotonic()).bounded(1.0) == 0.0


def test_back_to_back_requests_end_with_an_announced_close_before_the_deadline(tmp_path: Path) -> None:
    lifetime = 1.5
    with handed_over(tmp_path, in_thread(slow), deadline=unix_ms(lifetime)) as sock:
        deadline = time.monotonic() + lifetime
        answers: list[tuple[int, bytes, str | None]] = []
        while time.monotonic() < deadline + 1:  # today's SDK never announces the end: give up after the kill
            answers.append(ask(sock, f"/{len(answers)}"))
            if answers[-1][2] == "close":
                break
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the connection ends after the announced last response"
        ended = time.monotonic()
    assert answers[-1][2] == "close", "the last response it can finish says so"
    assert all(status == 200 and body == b"done" for status, body, _ in answers), "every response whole"
    assert len(answers) >= 3, "keep-alive served several before the end"
    assert ended < deadline, "and all of it before the container would be killed"


def test_an_idle_connection_is_closed_before_the_deadline(tmp_path: Path) -> None:
    lifetime = 1.5
    with handed_over(tmp_path, in_thread(slow), deadline=unix_ms(lifetime)) as sock:
        deadline = time.monotonic() + lifetime
        assert ask(sock) == (200, b"done", None)
        sock.settimeout(lifetime + 5)
        assert sock.recv(1) == b"", "a clean end (FIN), no reset"
        closed = time.monotonic()
    assert closed < deadline - MARGIN / 4, "closed before the kill, with time for the process to end"


def test_a_deadline_too_near_for_a_second_request_makes_the_first_the_last(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(slow), deadline=unix_ms(MARGIN + 0.1)) as sock:
        assert ask(sock) == (200, b"done", "close")
        assert sock.recv(1) == b""


def test_without_a_deadline_the_connection_stays_open(tmp_path: Path) -> None:
    with handed_over(tmp_path, in_thread(slow), deadline=None) as sock:
        assert [ask(sock) for _ in range(3)] == [(200, b"done", None)] * 3
        sock.settimeout(MARGIN * 2)
        with pytest.raises(socket.timeout):
            sock.recv(1)


def test_pipelined_requests_already_received_are_not_waited_for(tmp_path: Path) -> None:
    # The bounded wait reads the socket only when nothing is buffered: requests that arrived
    # with the first one are answered at once, whatever the wait's bound.
    with handed_over(tmp_path, in_thread(slow), deadline=unix_ms(30)) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: fn\r\n\r\n" * 3)
        sock.settimeout(5)
        answers = []
        for _ in range(3):
            response = http.client.HTTPResponse(sock)
            response.begin()
            answers.append((response.status, response.read(), response.getheader("Connection")))
    assert answers == [(200, b"done", None)] * 3
