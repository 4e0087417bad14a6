"""serve() ends the process once the last client is done, without the interpreter's teardown,
and only where that loses nothing: each case runs a real handler process (see harness.py)."""

from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.handlers.harness import HANDLERS, handed_over, http_on, in_process

PROLOGUE = f"""
import atexit, sys, threading, time
sys.path.insert(0, {str(HANDLERS)!r})
from faas_handler import serve

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
sys.stdout.write("buffered, not yet written")  # stdout is a file: block-buffered
"""

CASES = {
    "exits at once": ("serve(app)\nprint('after serve')", "buffered, not yet writtenatexit ran\n"),
    "asked to return": (
        "serve(app, exit_when_done=False)\nprint(' after serve')",
        "buffered, not yet written after serve\natexit ran\n",
    ),
    "a thread still working": (
        "worker = threading.Thread(target=time.sleep, args=(0.2,))\nworker.start()\nserve(app)\nprint(' after serve')",
        "buffered, not yet written after serve\natexit ran\n",
    ),
    "a daemon thread does not hold it": (
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\nserve(app)\nprint(' after serve')",
        "buffered, not yet writtenatexit ran\n",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_serve_ends_the_process_only_where_nothing_else_would_run(tmp_path: Path, case: str) -> None:
    code, output = CASES[case]
    script, stdout = tmp_path / "handler.py", tmp_path / "stdout"
    script.write_text(PROLOGUE + code)
    with handed_over(tmp_path, in_process([sys.executable, "-I", str(script)], stdout=stdout)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
    assert stdout.read_text() == output


ASGI = f"""
import sys
sys.path.insert(0, {str(HANDLERS)!r})
from faas_handler import serve

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({{"type": "lifespan.startup.complete"}})
        await receive()
        print("lifespan shutdown")
        await send({{"type": "lifespan.shutdown.complete"}})
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"ok"}})

serve(app)
print("after serve")
"""


def test_an_asgi_app_has_its_lifespan_shutdown_before_the_end(tmp_path: Path) -> None:
    script, stdout = tmp_path / "handler.py", tmp_path / "stdout"
    script.write_text(ASGI)
    with handed_over(tmp_path, in_process([sys.executable, "-I", str(script)], stdout=stdout)) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
    assert stdout.read_text() == "lifespan shutdown\n"


RETIRED = f"""
import sys
sys.path.insert(0, {str(HANDLERS)!r})
from faas_handler import serve

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

serve(app)
print("never here: serve() ends the process")
"""


def hang_up_accepted(control: socket.socket) -> None:
    control.accept()[0].close()  # the daemon's Instance.stop() on a waiting handler


def hang_up_queued(control: socket.socket) -> None:
    # The listening socket closes with the handler's connection still in its queue: a retirement
    # that came before the daemon accepted the handler.
    assert select.select([control], [], [], 10)[0], "the handler connects"
    control.close()


@pytest.mark.parametrize("hang_up", [hang_up_accepted, hang_up_queued])
def test_a_container_retired_before_any_connection_exits_quietly(
    tmp_path: Path, hang_up: Callable[[socket.socket], None]
) -> None:
    script, out = tmp_path / "handler.py", tmp_path / "out"
    script.write_text(RETIRED)
    with socket.socket(socket.AF_UNIX) as control:
        control.bind(str(tmp_path / "control.sock"))
        control.listen(1)
        control.settimeout(10)
        with open(out, "wb") as output:
            handler = subprocess.Popen(
                [sys.executable, "-I", str(script)],
                env={"FAAS_CONTROL_SOCKET": str(tmp_path / "control.sock")},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        hang_up(control)
        assert handler.wait(timeout=10) == 0
    assert out.read_text() == "", "nothing in the function's log: no HandoffError, no traceback"


def test_a_reused_container_retired_between_connections_exits_quietly(tmp_path: Path) -> None:
    script, out = tmp_path / "handler.py", tmp_path / "out"
    script.write_text(RETIRED)
    start = in_process([sys.executable, "-I", str(script)], stderr=out)
    with handed_over(tmp_path, start, retire=True, more=True) as sock:
        conn = http_on(sock)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
    assert re.fullmatch(r'faas_handler id=req-1 "GET / HTTP/1.1" 200 2\n', out.read_text())
