"""Reading a function's log: the last N lines, lines since a time, then new lines as they come.

Reads work on files opened together (a ``Snapshot``), so a rotation in the middle of a read
neither skips nor repeats a file; following goes on in the newest of them (a ``Follower``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from faasd.logs.query import LogQuery
from faasd.logs.records import TIMESTAMP_WIDTH, timestamp

if TYPE_CHECKING:
    from faasd.logs.writer import FunctionLog

READ_BYTES = 64 * 1024
# A follower wakes at least this often, so a client that went away is noticed without a write.
FOLLOW_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class Segment:
    """One opened log file and its size when it was opened."""

    handle: BinaryIO
    size: int


class Snapshot:
    """A function's log files, oldest first, opened together: reads see one consistent log."""

    def __init__(self, current: Path, segments: list[Segment]) -> None:
        self._current = current
        self.segments = segments

    def read(self, tail: int | None, since: datetime | None) -> Iterator[bytes]:
        """Chunks of the lines asked for, up to the sizes at opening; never an empty chunk."""
        index, offset = (0, 0) if tail is None else self._tail_start(tail)
        if since is not None:
            index, offset = self._since_start(index, offset, timestamp(since).encode())
        for position in range(index, len(self.segments)):
            segment = self.segments[position]
            segment.handle.seek(offset if position == index else 0)
            left = segment.size - segment.handle.tell()
            while left > 0 and (chunk := segment.handle.read(min(left, READ_BYTES))):
                left -= len(chunk)
                yield chunk

    def follower(self) -> Follower:
        """Hands the newest file over to a ``Follower`` that goes on from the snapshot's end."""
        if not self.segments:
            return Follower(self._current, None)
        newest = self.segments.pop()
        newest.handle.seek(newest.size)
        return Follower(self._current, newest.handle)

    def close(self) -> None:
        for segment in self.segments:
            segment.handle.close()

    def _tail_start(self, lines: int) -> tuple[int, int]:
        """Where the last ``lines`` lines begin: (segment index, offset), scanning back by blocks."""
        if lines == 0:
            return len(self.segments), 0
        remaining = lines
        for index in reversed(range(len(self.segments))):
            handle, size = self.segments[index].handle, self.segments[index].size
            if size == 0:
                continue
            end = size - 1  # the newline that ends the file's last line
            while end > 0:
                begin = max(0, end - READ_BYTES)
                handle.seek(begin)
                block = handle.read(end - begin)
                newlines = block.count(b"\n")
                if newlines >= remaining:
                    cut = len(block)
                    for _ in range(remaining):
                        cut = block.rindex(b"\n", 0, cut)
                    return index, begin + cut + 1
                remaining -= newlines
                end = begin
            remaining -= 1  # the file's first line
            if remaining == 0:
                return index, 0
        return 0, 0

    def _since_start(self, index: int, offset: int, since: bytes) -> tuple[int, int]:
        """The first line at or after ``since`` from (index, offset); lines are in time order."""
        for position in range(index, len(self.segments)):
            later = self.segments[position + 1 :]
            if later and later[0].size and _first_line(later[0])[:TIMESTAMP_WIDTH] < since:
                continue  # this whole file is older than the next one's first line
            handle, size = self.segments[position].handle, self.segments[position].size
            handle.seek(offset if position == index else 0)
            while (start := handle.tell()) < size:
                if handle.readline()[:TIMESTAMP_WIDTH] >= since:
                    return position, start
        return len(self.segments), 0


def _first_line(segment: Segment) -> bytes:
    segment.handle.seek(0)
    return segment.handle.readline(TIMESTAMP_WIDTH)


class Follower:
    """Reads what is appended to ``current`` from where a snapshot ended, across rotations."""

    def __init__(self, current: Path, handle: BinaryIO | None) -> None:
        self._current = current
        self._handle = handle

    def read(self) -> bytes:
        """The next new bytes, or nothing when there are none yet."""
        while True:
            if self._handle is None:
                try:
                    self._handle = open(self._current, "rb")  # closed by close()
                except FileNotFoundError:
                    return b""
            # Checked before reading: a file seen rotated away is complete, so reading it to its
            # end cannot miss a write that came just before the rotation.
            rotated = not self._is_current(self._handle)
            data = self._handle.read(READ_BYTES)
            if data or not rotated:
                return data
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def _is_current(self, handle: BinaryIO) -> bool:
        try:
            current = os.stat(self._current)
        except FileNotFoundError:
            return False
        opened = os.fstat(handle.fileno())
        return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


async def read_log(function_log: FunctionLog, query: LogQuery) -> AsyncGenerator[bytes]:
    """The lines ``query`` asks for, in chunks; with ``follow``, then new ones until the log ends.

    While following, an empty chunk comes at least every ``FOLLOW_IDLE_SECONDS``, so the
    caller can notice that its client went away even when nothing is written.
    """
    snapshot = await asyncio.to_thread(function_log.files.snapshot)
    follower: Follower | None = None
    try:
        chunks = snapshot.read(query.tail, query.since)
        while chunk := await asyncio.to_thread(next, chunks, b""):
            yield chunk
        if not query.follow:
            return
        follower = snapshot.follower()
        while True:
            written = function_log.next_write()
            if chunk := await asyncio.to_thread(follower.read):
                yield chunk
                continue
            if function_log.follows_ended:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(written.wait(), FOLLOW_IDLE_SECONDS)
            yield b""
    finally:
        snapshot.close()
        if follower is not None:
            follower.close()
