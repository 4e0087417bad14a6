"""A container's stdout and stderr: two pipes the event loop reads, line by line, into its log.

The loop reads them without ever blocking and only while the function's buffer has room; beyond
that, output is counted and dropped, so a flooding container costs reading time and no memory.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from faasd.logs.records import LineSplitter

if TYPE_CHECKING:
    from faasd.logs.writer import FunctionLog

# One pipe's worth (Linux's default pipe capacity) per wake-up.
PIPE_READ_BYTES = 64 * 1024
# After the container is gone its pipes reach EOF at once; this only bounds a stuck reader.
PIPE_CLOSE_SECONDS = 1.0


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
            data = os.read(self._read_fd, PIPE_READ_BYTES)
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
