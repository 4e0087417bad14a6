"""A clock as Server-Sent Events, in the plain style: open ``http://IP/`` in a browser.

``GET /`` is a page whose EventSource follows ``GET /clock``: one ``time`` event a second
(``?count=10&interval=1``), each with an id. The stream ends before the daemon's deadline
(30 s unless the function sets another); the browser then reconnects on a new connection,
so in a new container, and sends ``Last-Event-ID``: the clock counts on from there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from faas_handler import Event, Request, Response, serve, sse

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>faasd clock</title>
<p>Tick <b id="n">-</b> at <b id="time">-</b>, each from a container of its own connection.</p>
<script>
  const source = new EventSource("/clock");
  source.addEventListener("time", (event) => {
    const tick = JSON.parse(event.data);
    document.getElementById("n").textContent = tick.n;
    document.getElementById("time").textContent = tick.time;
  });
</script>
"""


def handle(request: Request) -> Response:
    if request.path == "/clock":
        first = int(request.headers.get("Last-Event-ID") or 0) + 1
        count = int(request.query.get("count", 10))
        return sse(clock(first, count, float(request.query.get("interval", 1))))
    return Response(PAGE, content_type="text/html; charset=utf-8")


def clock(first: int, count: int, interval: float) -> Iterator[Event]:
    for n in range(first, first + count):
        if n > first:
            time.sleep(interval)
        tick = {"n": n, "time": time.strftime("%H:%M:%S", time.gmtime())}
        yield Event(tick, event="time", id=str(n), retry=1000)


if __name__ == "__main__":
    serve(handle)
