"""Reading real rotated files: tail counts back across them, since finds a time, follow goes on."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from faasd.config import LogLimits
from faasd.logs import LogQuery, Logs, read_log
from faasd.logs.files import LogFiles
from tests.unit.logs.logfiles import T0, all_lines, records, texts


@pytest.mark.parametrize("tail", [0, 1, 2, 7, 20, 21, 59, 60, 61, 1000])
def test_tail_counts_back_across_rotated_files(tmp_path: Path, tail: int) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=3))
    for i in range(60):
        files.append(records(1, start=i))
    everything = all_lines(files)
    assert all_lines(files, tail=tail) == (everything[-tail:] if tail else [])


def test_tail_finds_lines_beyond_one_read_block(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=10 * 1024 * 1024, max_files=2))
    files.append(records(20000))
    assert texts(all_lines(files, tail=15000)) == [f"line {i}" for i in range(5000, 20000)]


@pytest.mark.parametrize(("seconds", "first"), [(-5, 0), (0, 0), (12, 12), (37, 37), (59, 59), (60, None)])
def test_since_starts_at_the_first_line_at_or_after_it(tmp_path: Path, seconds: int, first: int | None) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=4))
    for i in range(60):
        files.append(records(1, start=i))
    kept = texts(all_lines(files))
    oldest = int(kept[0].split()[1])
    lines = texts(all_lines(files, since=T0 + timedelta(seconds=seconds)))
    expected = [] if first is None else [f"line {i}" for i in range(max(first, oldest), 60)]
    assert lines == expected
    assert texts(all_lines(files, tail=3, since=T0 + timedelta(seconds=58))) == ["line 58", "line 59"]


def test_follower_goes_on_across_rotations(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=3))
    files.append(records(5))
    snapshot = files.snapshot()
    assert b"".join(snapshot.read(None, None)).count(b"\n") == 5
    follower = snapshot.follower()
    snapshot.close()
    seen = b""
    for i in range(5, 40):  # rotates several times, the follower reading between writes
        files.append(records(1, start=i))
        while chunk := follower.read():
            seen += chunk
    follower.close()
    assert texts(seen.splitlines()) == [f"line {i}" for i in range(5, 40)]


async def test_read_log_follows_until_the_log_closes(tmp_path: Path) -> None:
    logs = Logs(tmp_path, LogLimits())
    function_log = logs.get("fn")
    function_log.write_lines("r1", "stdout", [b"before"])
    await asyncio.sleep(0.05)

    async def collect() -> list[bytes]:
        chunks = [chunk async for chunk in read_log(function_log, LogQuery(tail=1, follow=True))]
        return b"".join(chunks).splitlines()

    follow = asyncio.ensure_future(collect())
    await asyncio.sleep(0.1)
    function_log.write_lines("r2", "stderr", [b"after"])
    await asyncio.sleep(0.1)
    assert not follow.done()
    await logs.remove("fn")
    lines = await asyncio.wait_for(follow, 5)
    assert [line.split(b" ", 1)[1] for line in lines] == [b"r1 stdout before", b"r2 stderr after"]
    assert not (tmp_path / "fn").exists()
    await logs.close()


async def test_an_idle_follower_wakes_so_its_caller_can_notice_a_gone_client(tmp_path: Path) -> None:
    logs = Logs(tmp_path, LogLimits())
    chunks = read_log(logs.get("fn"), LogQuery(follow=True))
    started = time.monotonic()
    assert await asyncio.wait_for(anext(chunks), 5) == b""
    assert time.monotonic() - started < 2
    await chunks.aclose()
    logs.end_follows()
    await logs.close()
