"""faas logs against the real daemon: what containers print, with request ids; follow; rotation; rm."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, Daemon, daemon_range, eventually, http_get


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    """Without warm containers: each request's lines come from the one container started for it.

    (test_pool.py shows a warm container's lines carry the id of the request it served.)
    """
    return make_daemon(daemon_range(0), "--warm", "0")


PRINTS = "echo to-stdout; echo to-stderr >&2"
# About 330 KB of numbered lines, then one 40000-byte line, then a last word on stderr.
FLOODS = "seq 1 5000 | sed 's/^/flood /'\nhead -c 40000 /dev/zero | tr '\\0' x\necho\necho done >&2"


def parse(output: str) -> list[tuple[datetime, str, str, str]]:
    """(time, request id, stream, text) of each line ``faas logs`` printed."""
    rows = []
    for line in output.splitlines():
        moment, request_id, stream, text = line.split(" ", 3)
        rows.append((datetime.fromisoformat(moment), request_id, stream, text))
    return rows


def records(daemon: Daemon, name: str) -> list[str]:
    """The daemon's own lines in ``name``'s log."""
    return [text for _, _, stream, text in parse(daemon.faas("logs", name).stdout) if stream == "faasd"]


def logs_api(daemon: Daemon, path: str) -> tuple[int, bytes]:
    """One GET on the control socket, for what the CLI does not send."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_logs_show_both_streams_with_the_request_id(daemon: Daemon, busybox_image: Callable[..., Path]) -> None:
    ip = daemon.deploy("talker", busybox_image("hi", prelude=PRINTS))
    for _ in range(2):
        assert http_get(ip) == (200, b"hi\n")
    assert eventually(lambda: len(records(daemon, "talker")) == 2)

    result = daemon.faas("logs", "talker")
    assert result.returncode == 0, result.stderr
    rows = parse(result.stdout)
    by_request: dict[str, set[tuple[str, str]]] = {}
    for _, request_id, stream, text in rows:
        by_request.setdefault(request_id, set()).add((stream, text.split(" ")[0]))
    assert len(by_request) == 2
    for lines in by_request.values():
        assert lines == {("stdout", "to-stdout"), ("stderr", "to-stderr"), ("faasd", "version=1")}
    assert [moment for moment, *_ in rows] == sorted(moment for moment, *_ in rows)
    assert all(text.startswith("version=1 outcome=served exit=0 duration_ms=") for text in records(daemon, "talker"))

    last = parse(daemon.faas("logs", "talker", "--tail", "1").stdout)
    assert [(request_id, stream) for _, request_id, stream, _ in last] == [(rows[-1][1], "faasd")]
    assert daemon.faas("logs", "talker", "--since", "2999-01-01T00:00:00Z").stdout == ""
    assert daemon.faas("logs", "talker", "--since", "1h").stdout == result.stdout


def test_bad_parameters_and_unknown_functions_are_refused(daemon: Daemon, busybox_image: Callable[..., Path]) -> None:
    daemon.deploy("quiet", busybox_image())
    since = daemon.faas("logs", "quiet", "--since", "yesterday")
    assert since.returncode == 1
    assert "since='yesterday' is neither an RFC 3339 time" in since.stderr
    unknown = daemon.faas("logs", "nothing")
    assert unknown.returncode == 1 and "no function named 'nothing'" in unknown.stderr
    for query, message in [("tail=-1", "tail='-1' is not a number"), ("follow=maybe", "follow='maybe'")]:
        status, body = logs_api(daemon, f"/v1/functions/quiet/logs?{query}")
        assert status == 400 and message in json.loads(body)["error"]
    assert logs_api(daemon, "/v1/functions/nothing/logs")[0] == 404


def daemon_fds(daemon: Daemon) -> int:
    assert daemon.proc is not None
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


class Follow:
    """``faas logs NAME -f`` running in the background, its lines gathered as they come."""

    def __init__(self, daemon: Daemon, name: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "faas"), "--socket", str(daemon.socket), "logs", name, "-f", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def saw(self, stream: str, text: str) -> bool:
        return any(row[2] == stream and row[3] == text for row in parse("".join(self.lines)))

    def wait(self, seconds: float = 10) -> int:
        code = self.proc.wait(timeout=seconds)
        self._reader.join(seconds)
        return code


def test_follow_sees_a_new_request_and_ctrl_c_ends_it_cleanly(
    daemon: Daemon, busybox_image: Callable[..., Path]
) -> None:
    ip = daemon.deploy("talker", busybox_image("hi", prelude=PRINTS))
    assert http_get(ip)[0] == 200
    assert eventually(lambda: len(records(daemon, "talker")) == 1)  # the log file is open for writing
    baseline = daemon_fds(daemon)
    follow = Follow(daemon, "talker", "--tail", "0")
    assert eventually(lambda: daemon_fds(daemon) > baseline)  # connected and following
    assert follow.lines == []

    assert http_get(ip) == (200, b"hi\n")
    assert eventually(lambda: follow.saw("stderr", "to-stderr") and follow.saw("stdout", "to-stdout"))
    assert eventually(lambda: sum(" faasd version=1 outcome=served" in line for line in follow.lines) == 1)

    follow.proc.send_signal(signal.SIGINT)
    assert follow.wait() == 0
    assert follow.proc.stderr is not None and follow.proc.stderr.read() == ""
    # The daemon lets go of the stream's socket and file once the client is gone.
    assert eventually(lambda: daemon_fds(daemon) == baseline)


def test_follow_ends_when_the_function_is_removed(daemon: Daemon, busybox_image: Callable[..., Path]) -> None:
    ip = daemon.deploy("talker", busybox_image("hi", prelude=PRINTS))
    assert http_get(ip)[0] == 200
    assert eventually(lambda: len(records(daemon, "talker")) == 1)
    baseline = daemon_fds(daemon)
    follow = Follow(daemon, "talker", "--tail", "0")
    assert eventually(lambda: daemon_fds(daemon) > baseline)
    assert daemon.faas("rm", "talker").returncode == 0
    assert follow.wait() == 0
    assert follow.lines == []
    assert eventually(lambda: daemon_fds(daemon) <= baseline)


def test_rotation_keeps_the_cap_and_long_lines_are_cut(
    make_daemon: Callable[..., Daemon], busybox_image: Callable[..., Path]
) -> None:
    daemon = make_daemon(daemon_range(1), "--warm", "0", "--log-max-bytes", "65536", "--log-max-files", "2")
    ip = daemon.deploy("flood", busybox_image("ok", prelude=FLOODS))
    assert http_get(ip) == (200, b"ok\n")
    assert eventually(lambda: bool(records(daemon, "flood")))

    directory = daemon.state_dir / "logs" / "flood"
    assert sorted(p.name for p in directory.iterdir()) == ["current", "current.1"]
    assert all(p.stat().st_size <= 65536 for p in directory.iterdir())

    rows = parse(daemon.faas("logs", "flood").stdout)
    floods = [int(text.split()[1]) for _, _, stream, text in rows if text.startswith("flood ")]
    assert floods == list(range(5001 - len(floods), 5001))  # the newest lines, none missing
    assert len(floods) > 500  # with the cut line, about one full 64 KiB file of them
    long_line = next(text for _, _, stream, text in rows if text.startswith("xxx"))
    assert long_line == "x" * 16384 + " [cut]"
    assert ("stderr", "done") in [(stream, text) for _, _, stream, text in rows[-4:]]  # streams may interleave
    record = rows[-1][3]
    assert record.startswith("version=1 outcome=served exit=0 ") and record.endswith(" cut_lines=1")


def test_rm_removes_the_logs_and_a_redeploy_keeps_them(daemon: Daemon, busybox_image: Callable[..., Path]) -> None:
    image = busybox_image("hi", prelude=PRINTS)
    ip = daemon.deploy("talker", image)
    assert http_get(ip)[0] == 200
    assert eventually(lambda: len(records(daemon, "talker")) == 1)

    daemon.deploy("talker", busybox_image("hi again", prelude=PRINTS))
    assert http_get(ip) == (200, b"hi again\n")
    assert eventually(lambda: len(records(daemon, "talker")) == 2)
    daemon.stop()
    daemon.start()
    assert [r.split()[0] for r in records(daemon, "talker")] == ["version=1", "version=2"]

    assert daemon.faas("rm", "talker").returncode == 0
    assert not (daemon.state_dir / "logs" / "talker").exists()
    daemon.deploy("talker", image)
    result = daemon.faas("logs", "talker")
    assert result.returncode == 0 and result.stdout == ""


def test_a_flooding_function_does_not_slow_another(daemon: Daemon, busybox_image: Callable[..., Path]) -> None:
    flood_ip = daemon.deploy("flood", busybox_image("done", prelude="yes | head -c 30000000"))
    quiet_ip = daemon.deploy("quiet", busybox_image("quiet"))
    flooding = threading.Thread(target=http_get, args=(flood_ip,), daemon=True)
    flooding.start()
    assert eventually(lambda: (daemon.state_dir / "logs" / "flood" / "current").exists())
    slowest = 0.0
    for _ in range(5):
        started = time.monotonic()
        assert http_get(quiet_ip) == (200, b"quiet\n")
        slowest = max(slowest, time.monotonic() - started)
    flooding.join(60)
    assert slowest < 2.0, f"a request took {slowest:.2f} s while another function flooded its log"
    assert eventually(lambda: bool(records(daemon, "flood")))
    assert records(daemon, "flood")[0].startswith("version=1 outcome=served exit=0")


def test_shutdown_ends_follows_at_once(daemon: Daemon, busybox_image: Callable[..., Path]) -> None:
    daemon.deploy("talker", busybox_image("hi", prelude=PRINTS))
    baseline = daemon_fds(daemon)
    follow = Follow(daemon, "talker")
    assert eventually(lambda: daemon_fds(daemon) > baseline)  # connected and following
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5  # not aiohttp's 60 s wait for open handlers
    assert follow.wait() == 0
