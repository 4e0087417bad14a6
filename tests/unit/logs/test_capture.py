"""Capturing real child processes through real pipes: streams labelled, floods dropped, loop never stalled."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from faasd.config import LogLimits
from faasd.logs import Logs


async def test_capture_of_a_real_child_labels_each_stream(tmp_path: Path) -> None:
    logs = Logs(tmp_path, LogLimits())
    capture = logs.get("fn").capture("req1")
    child = await asyncio.create_subprocess_exec(
        "sh", "-c", "echo out; echo err >&2; printf 'no newline'", stdout=capture.stdout, stderr=capture.stderr
    )
    await child.wait()
    await capture.close()
    capture.record(outcome="served", exit=0)
    await logs.close()
    lines = (tmp_path / "fn" / "current").read_bytes().splitlines()
    assert sorted(line.split(b" ", 1)[1] for line in lines[:3]) == [
        b"req1 stderr err",
        b"req1 stdout no newline",
        b"req1 stdout out",
    ]
    assert lines[3].split(b" ", 1)[1] == b"req1 faasd outcome=served exit=0"
    assert all(datetime.fromisoformat(line.split(b" ")[0].decode()) for line in lines)


async def test_a_flood_onto_a_stuck_disk_is_dropped_not_buffered_and_never_stalls_the_loop(tmp_path: Path) -> None:
    # current is a FIFO nobody reads: opening it for writing blocks, as a hung disk would.
    (tmp_path / "fn").mkdir()
    os.mkfifo(tmp_path / "fn" / "current")
    limits = LogLimits(max_buffered_bytes=256 * 1024, max_line_bytes=1024)
    logs = Logs(tmp_path, limits)
    function_log = logs.get("fn")
    capture = function_log.capture("flood")
    flood = "import sys\nfor i in range(400000): sys.stdout.write('x' * 60 + '\\n')\nsys.stdout.write('y' * 100000)"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", flood, stdout=capture.stdout, stderr=capture.stderr
    )

    worst_gap, peak = 0.0, 0
    exited = asyncio.ensure_future(child.wait())
    while not exited.done():
        before = time.monotonic()
        await asyncio.sleep(0.005)
        worst_gap = max(worst_gap, time.monotonic() - before)
        peak = max(peak, function_log.buffered_bytes)
    await asyncio.wait_for(capture.close(), 5)
    capture.record(outcome="served")

    assert worst_gap < 0.25, f"the event loop stalled for {worst_gap:.3f} s"
    assert peak <= limits.max_buffered_bytes
    assert capture.dropped_lines > 300000  # 400000 lines of 60 bytes could not all wait in 256 KiB

    reader = os.open(tmp_path / "fn" / "current", os.O_RDONLY | os.O_NONBLOCK)  # the disk comes back
    received = bytearray()
    closing = asyncio.ensure_future(logs.close())
    while not closing.done():
        await asyncio.sleep(0.01)
        try:
            while chunk := os.read(reader, 1 << 20):
                received += chunk
        except BlockingIOError:
            pass
    os.close(reader)
    await closing
    record = received.splitlines()[-1].decode()
    assert " flood faasd outcome=served " in record and "cut_lines=1" in record and "dropped_lines=" in record
