"""Plays the daemon for a handler: a real control socket, a real TCP client on 127.0.0.1.

``handed_over`` accepts a TCP connection, listens on a control socket and hands the accepted
socket to the handler with SCM_RIGHTS, as protocol v1 says. The SDK runs ``serve(app)`` in a
thread (``in_thread``); example apps and the C handler run as processes (``in_process``).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

HANDLERS = Path(__file__).resolve().parents[3] / "handlers"
_spec = importlib.util.spec_from_file_location("faas_handler", HANDLERS / "faas_handler.py")
assert _spec is not None and _spec.loader is not None
faas_handler = importlib.util.module_from_spec(_spec)
sys.modules["faas_handler"] = faas_handler  # dataclasses look their module up there
_spec.loader.exec_module(faas_handler)

Start = Callable[[str], Callable[[], None]]  # starts a handler on a control socket; returns "wait for its end"
METADATA = {"v": 1, "id": "req-1", "function": "fn", "version": 3}
DEADLINE_SECONDS = 60  # the handed-over connection's deadline, unless a test gives its own


@contextmanager
def handed_over(tmp_path: Path, start: Start, *, retire: bool = False, **metadata: Any) -> Iterator[socket.socket]:
    """Start a handler, give it a fresh TCP connection, yield our (client) end; then wait for its exit.

    ``metadata`` adds to (or replaces) the keys of the message that hands the connection over.
    With ``retire``, the handler that comes back for another connection (``more=True``) is hung
    up on, as the daemon retires a container: its control connection closes without a message.
    """
    control_path = str(tmp_path / "control.sock")
    with socket.socket(socket.AF_UNIX) as control, socket.create_server(("127.0.0.1", 0)) as listener:
        control.bind(control_path)
        control.listen(1)
        control.settimeout(10)
        client = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, peer = listener.accept()
        wait = start(control_path)
        with accepted, control.accept()[0] as conn:
            accepted.setblocking(False)  # as the daemon's asyncio loop leaves it
            deadline = int((time.time() + DEADLINE_SECONDS) * 1000)
            message = {**METADATA, "deadline": deadline, "peer": f"{peer[0]}:{peer[1]}", **metadata}
            payload = json.dumps(message).encode()
            socket.send_fds(conn, [payload], [accepted.fileno()])
        with client:
            yield client
            # An unread http.client response still holds the socket: close() alone may not end it.
            with suppress(OSError):  # unless http.client closed it already
                client.shutdown(socket.SHUT_RDWR)
        if retire:
            control.accept()[0].close()
        wait()


def in_thread(app: Callable[..., Any], style: str | None = None) -> Start:
    def start(path: str) -> Callable[[], None]:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                faas_handler.serve(app, path, style)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def wait() -> None:
            thread.join(10)
            assert not thread.is_alive(), "serve() did not return after the client left"
            if errors:
                raise errors[0]

        return wait

    return start


def in_process(
    argv: list[str], env: dict[str, str] | None = None, stdout: Path | None = None, stderr: Path | None = None
) -> Start:
    """Run ``argv`` as the handler; ``stdout`` and ``stderr``, if given, are the files its output goes to."""

    def start(path: str) -> Callable[[], None]:
        with (
            open(stdout, "wb") if stdout else nullcontext(None) as out,
            open(stderr, "wb") if stderr else nullcontext(None) as err,
        ):
            environment = {**os.environ, **(env or {}), "FAAS_CONTROL_SOCKET": path}
            proc = subprocess.Popen(argv, env=environment, stdout=out, stderr=err)

        def wait() -> None:
            assert proc.wait(timeout=10) == 0, f"{argv[0]} exited with {proc.returncode}"

        return wait

    return start


def http_on(sock: socket.socket) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1")
    conn.sock = sock
    return conn


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
