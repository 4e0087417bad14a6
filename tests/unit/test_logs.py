"""Logs on real files, real pipes and real child processes: parsing, cutting, rotation, reading."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from faasd.config import LogLimits
from faasd.errors import InvalidRequest
from faasd.logs import (
    LineSplitter,
    LogFiles,
    LogQuery,
    Logs,
    format_lines,
    parse_follow,
    parse_query,
    parse_since,
    parse_tail,
    read_log,
    timestamp,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T0 = datetime(2024, 5, 1, 0, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("45s", NOW - timedelta(seconds=45)),
        ("10m", NOW - timedelta(minutes=10)),
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("2d", NOW - timedelta(days=2)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01t10:00:00.25z", datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01 10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_since_takes_rfc3339_times_and_durations(value: str, expected: datetime) -> None:
    assert parse_since(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("", "neither an RFC 3339 time"),
        ("10", "neither an RFC 3339 time"),
        ("1y", "neither an RFC 3339 time"),
        ("-5m", "neither an RFC 3339 time"),
        ("yesterday", "neither an RFC 3339 time"),
        ("2024-05-01", "neither an RFC 3339 time"),
        ("2024-13-01T00:00:00Z", "neither an RFC 3339 time"),
        ("99999999999999d", "neither an RFC 3339 time"),
        ("2024-05-01T10:00:00", "has no time zone"),
    ],
)
def test_bad_since_says_what_is_accepted(value: str, hint: str) -> None:
    with pytest.raises(InvalidRequest, match=hint) as caught:
        parse_since(value, NOW)
    assert caught.value.status == 400 and f"since={value!r}" in caught.value.message


def test_tail_and_follow_values() -> None:
    assert parse_tail("0") == 0 and parse_tail("250") == 250
    for bad in ("", "-1", "1.5", "ten", " 3"):
        with pytest.raises(InvalidRequest, match="not a number of lines"):
            parse_tail(bad)
    assert [parse_follow(v) for v in ("1", "true", "YES", "0", "false", "")] == [True, True, True, False, False, False]
    with pytest.raises(InvalidRequest, match="follow='maybe'"):
        parse_follow("maybe")


def test_query_defaults_and_all_parameters() -> None:
    assert parse_query({}, NOW) == LogQuery()
    assert parse_query({"tail": "5", "since": "1m", "follow": "1"}, NOW) == LogQuery(
        tail=5, since=NOW - timedelta(minutes=1), follow=True
    )


def test_records_start_with_a_fixed_width_utc_time() -> None:
    moment = datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(moment) == "2024-05-01T12:00:00.000005Z"
    assert format_lines(moment, "abc", "stderr", [b"one", b"", b"three"]) == (
        b"2024-05-01T12:00:00.000005Z abc stderr one\n"
        b"2024-05-01T12:00:00.000005Z abc stderr \n"
        b"2024-05-01T12:00:00.000005Z abc stderr three\n"
    )


@pytest.mark.parametrize(
    ("feeds", "expected", "flushed"),
    [
        ([b"a\nb", b"c\n"], [[b"a"], [b"bc"]], []),
        ([b"\n\n"], [[b"", b""]], []),
        ([b"no", b"nl"], [[], []], [b"nonl"]),
        ([b"abcdefgh\nxy\n"], [[b"abcd [cut]", b"xy"]], []),
        ([b"abc", b"def", b"gh", b"ij\nok\n"], [[], [b"abcd [cut]"], [], [b"ok"]], []),
        ([b"abcdefgh"], [[b"abcd [cut]"]], []),
        ([b"abcd\n"], [[b"abcd"]], []),
    ],
)
def test_splitter_cuts_long_lines_and_drops_their_rest(
    feeds: list[bytes], expected: list[list[bytes]], flushed: list[bytes]
) -> None:
    splitter = LineSplitter(max_bytes=4)
    assert [splitter.feed(data) for data in feeds] == expected
    assert splitter.flush() == flushed


@pytest.mark.parametrize(
    "feeds",
    [
        [b"a\nb", b"c\n", b"d"],
        [b"\n\n", b"x"],
        [b"abcdefgh\nxy\n", b"z\n"],
        [b"abc", b"def", b"gh", b"ij\nok\n", b"end\n"],
        [b"abcdefgh", b"ijk\nl", b"m\n"],
        [b"ab\nabcdefghij", b"k\n", b"n\n"],
    ],
)
def test_skipping_counts_the_lines_feeding_would_make_and_keeps_the_same_state(feeds: list[bytes]) -> None:
    for split in range(len(feeds)):
        fed, skipped = LineSplitter(max_bytes=4), LineSplitter(max_bytes=4)
        made = [len(fed.feed(data)) for data in feeds[:split]]
        counted = [skipped.skip(data) for data in feeds[:split]]
        assert counted == made
        assert [fed.feed(data) for data in feeds[split:]] == [skipped.feed(data) for data in feeds[split:]]
        assert fed.flush() == skipped.flush()


def test_splitter_holds_at_most_one_line_whatever_arrives() -> None:
    splitter = LineSplitter(max_bytes=1000)
    for _ in range(1000):
        splitter.feed(b"x" * 999)  # a line that never ends
        assert len(splitter._partial) <= 1000
    assert splitter.cut == 1
    assert splitter.feed(b"\nnext\n") == [b"next"]


def records(count: int, start: int = 0, moment: datetime = T0) -> bytes:
    return b"".join(
        format_lines(moment + timedelta(seconds=i), "r", "stdout", [b"line %d" % i])
        for i in range(start, start + count)
    )


def all_lines(files: LogFiles, tail: int | None = None, since: datetime | None = None) -> list[bytes]:
    snapshot = files.snapshot()
    try:
        return b"".join(snapshot.read(tail, since)).splitlines()
    finally:
        snapshot.close()


def texts(lines: list[bytes]) -> list[str]:
    return [line.split(b" ", 3)[3].decode() for line in lines]


def test_rotation_keeps_the_cap_and_the_newest_lines(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=3))
    for i in range(200):
        files.append(records(1, start=i))
    files.close()
    assert sorted(p.name for p in (tmp_path / "fn").iterdir()) == ["current", "current.1", "current.2"]
    for path in (tmp_path / "fn").iterdir():
        assert 0 < path.stat().st_size <= 1000
        assert path.read_bytes().endswith(b"\n")
    kept = texts(all_lines(files))
    assert kept == [f"line {i}" for i in range(200 - len(kept), 200)]
    assert len(kept) > 2 * 1000 // len(records(1, 199))


def test_a_batch_larger_than_a_file_is_split_at_record_boundaries(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=2))
    files.append(records(50))
    assert all(path.stat().st_size <= 1000 for path in (tmp_path / "fn").iterdir())
    kept = texts(all_lines(files))
    assert kept == [f"line {i}" for i in range(50 - len(kept), 50)]


def test_one_file_only_starts_over_when_full(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=1))
    for i in range(100):
        files.append(records(1, start=i))
    assert [p.name for p in (tmp_path / "fn").iterdir()] == ["current"]
    assert texts(all_lines(files))[-1] == "line 99"


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


async def test_sweep_removes_what_belongs_to_no_function(tmp_path: Path) -> None:
    logs = Logs(tmp_path, LogLimits())
    (tmp_path / "kept").mkdir()
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "current").write_text("x\n")
    (tmp_path / "old.log").write_text("x\n")
    removed = await logs.sweep({"kept"})
    assert sorted(p.name for p in removed) == ["gone", "old.log"]
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    await logs.close()
