"""A one-shot container's stdout read as it comes: the tail kept, whole lines handed on."""

from __future__ import annotations

import asyncio

from faasd.source.sandbox import read_tail


async def fed(chunks: list[bytes], limit: int) -> tuple[bytes, list[bytes]]:
    stream = asyncio.StreamReader()
    for chunk in chunks:
        stream.feed_data(chunk)
    stream.feed_eof()
    lines: list[bytes] = []

    async def on_line(line: bytes) -> None:
        lines.append(line)

    return await read_tail(stream, limit, on_line), lines


async def test_lines_cut_across_reads_are_handed_on_whole_and_the_tail_is_kept() -> None:
    tail, lines = await fed([b"one\ntw", b"o\n", b"\nthree\nunfinished"], limit=1024)
    assert lines == [b"one", b"two", b"", b"three"], "a line without its end is no line yet"
    assert tail == b"one\ntwo\n\nthree\nunfinished"


async def test_a_line_longer_than_the_limit_is_left_out_and_memory_stays_bounded() -> None:
    tail, lines = await fed([b"short\n", b"x" * 100, b"y" * 100, b"\nafter\n"], limit=64)
    assert lines == [b"short", b"after"]
    assert len(tail) == 64 and tail.endswith(b"\nafter\n")


async def test_the_rest_of_a_long_line_read_apart_is_no_line_of_its_own() -> None:
    stream = asyncio.StreamReader()
    lines: list[bytes] = []

    async def on_line(line: bytes) -> None:
        lines.append(line)

    async def feed() -> None:
        for chunk in [b"x" * 100, b"tail-of-it\n", b"next\n"]:
            stream.feed_data(chunk)
            await asyncio.sleep(0.01)  # each its own read
        stream.feed_eof()

    await asyncio.gather(read_tail(stream, 64, on_line), feed())
    assert lines == [b"next"]
