"""One function's log files on disk: ``current`` and its rotated predecessors, under a size cap."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from faasd.config import LogLimits
from faasd.logs.reader import Segment, Snapshot


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
        snapshot = Snapshot(self.current, [])
        with self._lock:
            try:
                for age in reversed(range(self._limits.max_files)):
                    try:
                        handle = open(self.path(age), "rb")  # closed by Snapshot.close
                    except FileNotFoundError:
                        continue
                    snapshot.segments.append(Segment(handle, os.fstat(handle.fileno()).st_size))
            except BaseException:
                snapshot.close()
                raise
        return snapshot

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
