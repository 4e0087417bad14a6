"""The record format, and cutting output into lines that never hold more than one line's worth."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from faasd.logs.records import LineSplitter, format_lines, timestamp


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
