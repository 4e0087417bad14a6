"""Per-function logs: each container's stdout and stderr, line by line, in size-capped rotated files.

Every line on disk reads ``TIME REQUEST-ID STREAM TEXT``: an RFC 3339 UTC time with microseconds
(fixed width, so times compare as text), the connection's request id, ``stdout``, ``stderr`` or
``faasd`` (the daemon's own record of how the connection ended), then the text. Files live in
``state/logs/<function>/``: ``current`` and the rotated ``current.1`` (newer) ... ``current.N``.

On the way to disk nothing can grow the daemon's memory or stall it: a line is cut at
``max_line_bytes``; output waiting for the disk is capped at ``max_buffered_bytes`` per function
and what does not fit is dropped (and counted in the connection's record); pipes are read by the
event loop without ever blocking, and files are written by a thread of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from faasd.config import LogLimits
from faasd.errors import InvalidRequest

log = logging.getLogger(__name__)

READ_BYTES = 64 * 1024
TIMESTAMP_WIDTH = len("2024-05-01T12:00:00.000000Z")
CUT_MARK = b" [cut]"
# After the container is gone its pipes reach EOF at once; this only bounds a stuck reader.
PIPE_CLOSE_SECONDS = 1.0
# A follower wakes at least this often, so a client that went away is noticed without a write.
FOLLOW_IDLE_SECONDS = 1.0
DURATION = re.compile(r"(\d+)([SMHD])")
UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600, "D": 86400}
TRUE_WORDS = {"1", "true", "yes"}
FALSE_WORDS = {"", "0", "false", "no"}


def timestamp(moment: datetime) -> str:
    """``moment`` as the fixed-width RFC 3339 UTC time that starts every log line."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_lines(moment: datetime, request_id: str, stream: str, lines: list[bytes]) -> bytes:
    """``lines`` as log records, each ``TIME REQUEST-ID STREAM TEXT`` and a newline."""
    prefix = f"{timestamp(moment)} {request_id} {stream} ".encode()
    return prefix + (b"\n" + prefix).join(lines) + b"\n"


@dataclass(frozen=True)
class LogQuery:
    """What a client asked of a function's log."""

    tail: int | None = None  # only the last N lines
    since: datetime | None = None  # only lines from this time on
    follow: bool = False  # then keep streaming new lines


def parse_since(value: str, now: datetime) -> datetime:
    """An RFC 3339 time (``2024-05-01T12:00:00Z``) or a duration back from ``now`` (``1h30m``)."""
    text = value.strip().upper()  # RFC 3339 allows a lower-case t and z
    try:
        if re.fullmatch(r"(\d+[SMHD])+", text):
            return now - timedelta(seconds=sum(int(n) * UNIT_SECONDS[unit] for n, unit in DURATION.findall(text)))
        moment = datetime.fromisoformat(text) if "T" in text or " " in text else None
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise InvalidRequest(
            f"since={value!r} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (45s, 10m, 1h30m, 2d)"
        )
    if moment.tzinfo is None:
        raise InvalidRequest(f"since={value!r} has no time zone: end it with Z (UTC) or an offset such as +02:00")
    return moment


def parse_tail(value: str) -> int:
    """A number of lines, zero or more."""
    if not value.isdigit():
        raise InvalidRequest(f"tail={value!r} is not a number of lines: give a whole number, 0 or more")
    return int(value)


def parse_follow(value: str) -> bool:
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise InvalidRequest(f"follow={value!r} is not a yes or no: give 1 or 0")


def parse_query(params: Mapping[str, str], now: datetime) -> LogQuery:
    """The ``tail``, ``since`` and ``follow`` parameters of a logs request."""
    return LogQuery(
        tail=parse_tail(params["tail"]) if "tail" in params else None,
        since=parse_since(params["since"], now) if "since" in params else None,
        follow=parse_follow(params.get("follow", "")),
    )


class LineSplitter:
    """Cuts a byte stream into lines of at most ``max_bytes``; holds at most one line's worth.

    A longer line is cut there and marked with `` [cut]``; the rest of it, up to the next
    newline, is dropped, so output that never ends a line costs nothing but the reading.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._partial = bytearray()
        self._discarding = False
        self.cut = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, without their newlines."""
        *lines, unfinished = data.split(b"\n")
        if lines:
            if self._discarding:
                del lines[0]  # the end of a line that was cut already
            else:
                lines[0] = bytes(self._partial) + lines[0]
            self._discarding = False
            self._partial = bytearray(unfinished)
        elif not self._discarding:
            self._partial += unfinished
        if lines and max(map(len, lines)) > self._max_bytes:
            lines = [self._cut(line) if len(line) > self._max_bytes else line for line in lines]
        if len(self._partial) > self._max_bytes:
            lines.append(self._cut(bytes(self._partial)))
            self._partial = bytearray()
            self._discarding = True
        return lines

    def skip(self, data: bytes) -> int:
        """Like ``feed`` for output nobody keeps: how many lines ``data`` ends, without making them."""
        last = data.rfind(b"\n")
        if last < 0:
            return len(self.feed(data))  # at most one line, cut
        ended = data.count(b"\n", 0, last + 1) - (1 if self._discarding else 0)
        self._discarding = False
        self._partial = bytearray()
        return ended + len(self.feed(data[last + 1 :]))

    def flush(self) -> list[bytes]:
        """The last line, when the stream ended without a newline."""
        rest, self._partial = bytes(self._partial), bytearray()
        return [rest] if rest else []

    def _cut(self, line: bytes) -> bytes:
        self.cut += 1
        return line[: self._max_bytes] + CUT_MARK


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


class LogFiles:
    """``current`` and its rotated predecessors in one directory, kept under the size cap.

    Only the log thread appends and rotates; readers open their files under the same lock, so
    a rotation never makes them miss or repeat a file, nor see half a write.
    """

    def __init__(self, directory: Path, limits: LogLimits) -> None:
        self.directory = directory
        self._limits = limits
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    @property
    def current(self) -> Path:
        return self.path(0)

    def path(self, age: int) -> Path:
        return self.directory / ("current" if age == 0 else f"current.{age}")

    def append(self, data: bytes) -> None:
        """Write whole records; rotate first when ``current`` would pass ``max_file_bytes``."""
        with self._lock:
            while data:
                if self._fd is None:
                    self._open()
                room = self._limits.max_file_bytes - self._size
                if len(data) <= room:
                    length = len(data)
                else:
                    length = data.rfind(b"\n", 0, room) + 1
                    if length == 0 and self._size == 0:
                        length = data.find(b"\n") + 1 or len(data)  # a record larger than a file goes alone
                if length:
                    self._write(data[:length])
                    data = data[length:]
                if data:
                    self._rotate()

    def snapshot(self) -> Snapshot:
        """Every file that exists, oldest first, opened at once."""
        segments: list[Segment] = []
        with self._lock:
            try:
                for age in reversed(range(self._limits.max_files)):
                    try:
                        handle = open(self.path(age), "rb")  # closed by Snapshot.close
                    except FileNotFoundError:
                        continue
                    segments.append(Segment(handle, os.fstat(handle.fileno()).st_size))
            except BaseException:
                Snapshot(self.current, segments).close()
                raise
        return Snapshot(self.current, segments)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        if self._limits.max_files == 1:
            self.current.unlink(missing_ok=True)
        for age in range(self._limits.max_files - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path(age - 1), self.path(age))


class FunctionLog:
    """One function's log: a bounded buffer in memory that the log thread writes to its files."""

    def __init__(self, name: str, files: LogFiles, limits: LogLimits, executor: ThreadPoolExecutor) -> None:
        self.name = name
        self.files = files
        self.limits = limits
        self._executor = executor
        self._pending: list[bytes] = []
        self._buffered = 0  # bytes pending or being written
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False
        self.closed = False
        self.follows_ended = False

    @property
    def buffered_bytes(self) -> int:
        """Output held in memory on its way to disk; never much over ``max_buffered_bytes``."""
        return self._buffered

    def capture(self, request_id: str) -> Capture:
        """Pipes for one container's stdout and stderr, whose lines come here."""
        return Capture(self, request_id)

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes of output would fit in the buffer."""
        return not self.closed and self._buffered + size <= self.limits.max_buffered_bytes

    def write_lines(self, request_id: str, stream: str, lines: list[bytes], force: bool = False) -> bool:
        """Queue ``lines`` for the disk; False (and nothing queued) when the buffer is full."""
        if self.closed or not lines:
            return False
        moment = datetime.now(UTC)
        size = sum(map(len, lines)) + len(lines) * (TIMESTAMP_WIDTH + len(request_id) + len(stream) + 4)
        if not force and not self.has_room(size):
            return False
        self._pending.append(format_lines(moment, request_id, stream, lines))
        self._buffered += size
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())
        self._wake.set()
        return True

    def next_write(self) -> asyncio.Event:
        """An event set once the next batch is on disk, or the log closes or stops following."""
        return self._written

    def end_follows(self) -> None:
        """Let every follower finish (at shutdown; the log itself goes on being written)."""
        self.follows_ended = True
        self._notify()

    async def close(self) -> None:
        """Write what is buffered, then refuse new lines and end every follower."""
        self.closed = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        await asyncio.get_running_loop().run_in_executor(self._executor, self.files.close)
        self.end_follows()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                batch = b"".join(self._pending)
                self._pending.clear()
                try:
                    await loop.run_in_executor(self._executor, self.files.append, batch)
                    self._recovered()
                except OSError as exc:
                    self._failed(exc)
                finally:
                    self._buffered -= len(batch)
                self._notify()
            if self.closed and not self._pending:
                return

    def _notify(self) -> None:
        self._written.set()
        self._written = asyncio.Event()

    def _failed(self, exc: OSError) -> None:
        """One warning when writing starts failing (disk full, say), not one per batch."""
        if not self._failing:
            log.warning("log write failed function=%s dir=%s error=%s", self.name, self.files.directory, exc)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("log write recovered function=%s", self.name)
        self._failing = False


class _Pipe:
    """One pipe whose far end is a container's stdout or stderr, read by the event loop."""

    def __init__(self, function_log: FunctionLog, request_id: str, stream: str) -> None:
        self._log = function_log
        self._request_id = request_id
        self._stream = stream
        self._splitter = LineSplitter(function_log.limits.max_line_bytes)
        self.dropped = 0
        self._read_fd, self.write_fd = os.pipe()
        self._loop = asyncio.get_running_loop()
        self.eof = self._loop.create_future()
        os.set_blocking(self._read_fd, False)
        self._loop.add_reader(self._read_fd, self._readable)

    @property
    def cut(self) -> int:
        return self._splitter.cut

    def close_write_end(self) -> None:
        """Drop the daemon's copy of the write end: the pipe ends when the container's do."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        if self._read_fd >= 0:
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = -1
            self._write(self._splitter.flush())
        if not self.eof.done():
            self.eof.set_result(None)

    def _readable(self) -> None:
        # One read per wake-up: a flooding container gets its turn and no more.
        try:
            data = os.read(self._read_fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
        elif self._log.has_room(len(data)):
            self._write(self._splitter.feed(data))
        else:
            # No room: only count what is dropped, at C speed, however short the lines.
            self.dropped += self._splitter.skip(data)

    def _write(self, lines: list[bytes]) -> None:
        if lines and not self._log.write_lines(self._request_id, self._stream, lines):
            self.dropped += len(lines)


class Capture:
    """One container's stdout and stderr on their way to its function's log."""

    def __init__(self, function_log: FunctionLog, request_id: str) -> None:
        self._log = function_log
        self.request_id = request_id
        self._stdout = _Pipe(function_log, request_id, "stdout")
        try:
            self._stderr = _Pipe(function_log, request_id, "stderr")
        except BaseException:
            self._stdout.close()
            raise

    @property
    def stdout(self) -> int:
        """The fd to give the container as its stdout."""
        return self._stdout.write_fd

    @property
    def stderr(self) -> int:
        return self._stderr.write_fd

    @property
    def dropped_lines(self) -> int:
        """Lines that found the buffer full (the disk behind), on both streams."""
        return self._stdout.dropped + self._stderr.dropped

    async def close(self) -> None:
        """Take the container's last lines (it has exited) and release both pipes."""
        pipes = (self._stdout, self._stderr)
        try:
            for pipe in pipes:
                pipe.close_write_end()
            await asyncio.wait([pipe.eof for pipe in pipes], timeout=PIPE_CLOSE_SECONDS)
        finally:
            for pipe in pipes:
                pipe.close()

    def record(self, **fields: object) -> None:
        """The daemon's one line on how the connection ended, after the container's own."""
        counts = {"cut_lines": self._stdout.cut + self._stderr.cut, "dropped_lines": self.dropped_lines}
        fields.update((key, value) for key, value in counts.items() if value)
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        self._log.write_lines(self.request_id, "faasd", [text.encode()], force=True)


async def read_log(function_log: FunctionLog, query: LogQuery) -> AsyncIterator[bytes]:
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


class Logs:
    """Every function's log under ``directory``.

    All file writes go through one thread of their own rather than the default pool: a slow or
    stuck disk then delays only log lines (dropped once the buffer is full), never an image
    import or the API's other blocking work.
    """

    def __init__(self, directory: Path, limits: LogLimits) -> None:
        self._directory = directory
        self._limits = limits
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faasd-logs")
        self._logs: dict[str, FunctionLog] = {}

    def get(self, name: str) -> FunctionLog:
        """The log of function ``name``; a redeploy keeps it, ``remove`` ends it."""
        function_log = self._logs.get(name)
        if function_log is None:
            files = LogFiles(self._directory / name, self._limits)
            function_log = self._logs[name] = FunctionLog(name, files, self._limits, self._executor)
        return function_log

    async def remove(self, name: str) -> None:
        """End ``name``'s log and delete its files (after any write still in flight)."""
        function_log = self._logs.pop(name, None)
        if function_log is not None:
            await function_log.close()
        directory = self._directory / name
        remove = functools.partial(shutil.rmtree, directory, ignore_errors=True)
        await asyncio.get_running_loop().run_in_executor(self._executor, remove)

    async def sweep(self, names: set[str]) -> list[Path]:
        """Delete what is under the logs dir but no function's log (an interrupted remove)."""

        def sweep() -> list[Path]:
            if not self._directory.is_dir():
                return []
            leftovers = [path for path in self._directory.iterdir() if path.name not in names]
            for path in leftovers:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            return leftovers

        return await asyncio.get_running_loop().run_in_executor(self._executor, sweep)

    def end_follows(self) -> None:
        for function_log in self._logs.values():
            function_log.end_follows()

    async def close(self) -> None:
        """Write what is buffered and close every file (at shutdown)."""
        for function_log in self._logs.values():
            await function_log.close()
        self._logs.clear()
        self._executor.shutdown(wait=True)
