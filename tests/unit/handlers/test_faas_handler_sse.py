"""Server-Sent Events: the encoding, and streams that leave one event at a time in both styles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.handlers.harness import faas_handler, handed_over, http_on, in_thread

Event = faas_handler.Event


@pytest.mark.parametrize(
    ("event", "encoded"),
    [
        (Event("hello"), b"data: hello\n\n"),
        (Event(""), b"data: \n\n"),
        (Event("one\ntwo\r\nthree\rfour"), b"data: one\ndata: two\ndata: three\ndata: four\n\n"),
        (Event({"n": 1}), b'data: {"n": 1}\n\n'),
        (Event([1, 2], event="tick", id="7", retry=1500), b"event: tick\nid: 7\nretry: 1500\ndata: [1, 2]\n\n"),
        (Event("é"), "data: é\n\n".encode()),
    ],
)
def test_an_event_is_encoded_as_the_html_standard_says(event: Any, encoded: bytes) -> None:
    assert event.encode() == encoded


@pytest.mark.parametrize("event", [Event("x", id="1\n2"), Event("x", event="a\rb"), Event("x", id="a\0")])
def test_a_field_that_would_break_the_stream_is_refused(event: Any) -> None:
    with pytest.raises(ValueError, match="must be one line without NUL"):
        event.encode()


def events_until(gate: threading.Event, closed: list[bool]) -> Iterator[Any]:
    """Two events, then a third once ``gate`` opens; ``closed`` records that the stream was closed."""
    try:
        yield "first"
        yield Event({"n": 2}, event="second", id="2")
        assert gate.wait(10)
        yield "third"
    finally:
        closed.append(True)


def plain(gate: threading.Event, closed: list[bool]) -> Callable[..., Any]:
    return lambda request: faas_handler.sse(events_until(gate, closed), headers={"X-Stream": "1"})


def wsgi(gate: threading.Event, closed: list[bool]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("X-Stream", "1")])
        return faas_handler.event_stream(events_until(gate, closed))

    return app


def read_event(response: Any) -> bytes:
    """One event off a chunked response, without reading ahead of it."""
    event = b""
    while not event.endswith(b"\n\n"):
        event += response.read(1)
    return event


@pytest.mark.parametrize("make_app", [plain, wsgi])
def test_each_event_arrives_before_the_next_is_made(tmp_path: Path, make_app: Callable[..., Any]) -> None:
    gate, closed = threading.Event(), []
    with handed_over(tmp_path, in_thread(make_app(gate, closed))) as sock:
        conn = http_on(sock)
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert (response.getheader("Content-Type"), response.getheader("X-Stream")) == ("text/event-stream", "1")
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert read_event(response) == b"data: first\n\n"
        assert read_event(response) == b'event: second\nid: 2\ndata: {"n": 2}\n\n'  # the stream waits at the gate
        gate.set()
        assert response.read() == b"data: third\n\n"
    assert closed == [True]


def ticks(closed: list[bool]) -> Iterator[str]:
    try:
        while True:
            yield "tick"
            time.sleep(0.01)
    finally:
        closed.append(True)


@pytest.mark.parametrize("style", ["plain", "wsgi"])
def test_a_client_gone_ends_an_endless_stream(tmp_path: Path, style: str) -> None:
    closed: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return faas_handler.event_stream(ticks(closed))

    handle = {"plain": lambda request: faas_handler.sse(ticks(closed)), "wsgi": app}[style]
    with handed_over(tmp_path, in_thread(handle)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/events")
        assert read_event(conn.getresponse()) == b"data: tick\n\n"
    assert closed == [True], "serve() returned once a write found the client gone"
