"""What a log line is: output cut into lines of bounded length, each written as one record.

A record is ``TIME REQUEST-ID STREAM TEXT`` and a newline. The time is fixed-width RFC 3339 UTC
with microseconds, so times compare as text and readers can find a time without parsing one.
"""

from __future__ import annotations

from datetime import UTC, datetime

TIMESTAMP_WIDTH = len("2024-05-01T12:00:00.000000Z")
CUT_MARK = b" [cut]"


def timestamp(moment: datetime) -> str:
    """``moment`` as the fixed-width RFC 3339 UTC time that starts every log line."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_lines(moment: datetime, request_id: str, stream: str, lines: list[bytes]) -> bytes:
    """``lines`` as log records, each ``TIME REQUEST-ID STREAM TEXT`` and a newline."""
    prefix = f"{timestamp(moment)} {request_id} {stream} ".encode()
    return prefix + (b"\n" + prefix).join(lines) + b"\n"


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
