"""Getting output to disk: a bounded buffer per function, drained by one thread shared by all.

All file work (appends, rotations, removals) goes through that one thread rather than the
default pool: a slow or stuck disk then delays only log lines (dropped once a buffer is full),
never an image import or the API's other blocking work; and a removal runs after the writes
queued before it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from faasd.config import LogLimits
from faasd.images.tree import remove_or_log
from faasd.logs.capture import Capture
from faasd.logs.files import LogFiles
from faasd.logs.records import format_lines

log = logging.getLogger(__name__)

# How long lines wait for others before a write: one hop to the log thread per batch, not per
# line, when a function serves hundreds of connections a second.
COALESCE_SECONDS = 0.005


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
        records = format_lines(datetime.now(UTC), request_id, stream, lines)
        if not force and not self.has_room(len(records)):
            return False
        self._pending.append(records)
        self._buffered += len(records)
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
            if not self.closed:
                await asyncio.sleep(COALESCE_SECONDS)
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


class Logs:
    """Every function's log under ``directory``, all written by one thread of their own."""

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
        """Delete what is under the logs dir but no function's log (an interrupted remove); what
        went. What cannot be removed is logged and left: the daemon serves all the same."""

        def sweep() -> list[Path]:
            if not self._directory.is_dir():
                return []
            leftovers = [path for path in self._directory.iterdir() if path.name not in names]
            return [path for path in leftovers if remove_or_log(path)]

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
