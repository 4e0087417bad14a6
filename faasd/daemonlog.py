"""The daemon's own log: one line per record, whatever a function, an image or a client sent.

Every line is formatted by ``EscapingFormatter``, so a value that came from outside (a Host
header, an image's tag, an error text quoting a config) cannot end a line early, forge the next
one or drive the terminal of whoever reads the log. Lines that anyone who can connect may cause
(a refused request) go through a ``Throttle`` and carry their outside values through
``clipped``, so no client can grow the log faster than the throttle's rate.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from faasd.printable import printable, printable_lines

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# A record's message beyond this is cut: every value in it should have been clipped already.
MAX_MESSAGE_CHARS = 4096
# What a log line keeps of one value a client chose (a Host header, a method, a reason).
FIELD_CHARS = 120
# With --log-file: the file rotates at this size, and this many rotated files are kept.
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


def configure(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr (journald under systemd), or to ``log_file`` rotated by size, escaped."""
    handler = logging.StreamHandler() if log_file is None else RotatingLog(log_file)
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


class RotatingLog(logging.handlers.RotatingFileHandler):
    """The daemon's log file, rotated by size; stderr follows it, so nothing Python or a library
    writes there (a warning, a traceback at exit) goes to a file that no longer rotates."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
        self._follow()

    def doRollover(self) -> None:
        super().doRollover()
        self._follow()

    def _follow(self) -> None:
        if self.stream is not None:
            os.dup2(self.stream.fileno(), sys.stderr.fileno())


class EscapingFormatter(logging.Formatter):
    """Escapes controls in the message (tracebacks keep their line breaks, nothing else)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, MAX_MESSAGE_CHARS)
        return super().formatMessage(record)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return printable_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return printable_lines(super().formatStack(stack_info))


def clipped(value: object, limit: int = FIELD_CHARS) -> str:
    """``value`` for a log line: controls escaped, at most ``limit`` characters of it kept."""
    return printable(str(value), limit)


class Throttle:
    """Lets the lines of one kind through at ``per_second`` on average and ``burst`` at once.

    The lines over that are counted, not written; the next line let through says how many
    were left out (``suppressed=N``), so a flood shows in the log as a few lines and a count.
    """

    def __init__(
        self,
        logger: logging.Logger,
        per_second: float = 1.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._per_second = per_second
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.suppressed = 0

    def log(self, level: int, msg: str, *args: object) -> None:
        """``logger.log(level, msg, *args)``, unless lines of this kind come too fast."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        if self.suppressed:
            msg, args = f"{msg} suppressed=%d", (*args, self.suppressed)
            self.suppressed = 0
        self._logger.log(level, msg, *args)
