"""Log files filled with numbered records one second apart, and the lines reading them returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from faasd.logs.files import LogFiles
from faasd.logs.records import format_lines

T0 = datetime(2024, 5, 1, 0, 0, 0, tzinfo=UTC)


def records(count: int, start: int = 0, moment: datetime = T0) -> bytes:
    """Records ``line START`` ... at ``moment`` + START seconds on, one second apart."""
    return b"".join(
        format_lines(moment + timedelta(seconds=i), "r", "stdout", [b"line %d" % i])
        for i in range(start, start + count)
    )


def all_lines(files: LogFiles, tail: int | None = None, since: datetime | None = None) -> list[bytes]:
    """The lines a snapshot of ``files`` reads, with the records' prefixes."""
    snapshot = files.snapshot()
    try:
        return b"".join(snapshot.read(tail, since)).splitlines()
    finally:
        snapshot.close()


def texts(lines: list[bytes]) -> list[str]:
    """Each line's text, without time, request id and stream."""
    return [line.split(b" ", 3)[3].decode() for line in lines]
