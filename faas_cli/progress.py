"""Upload progress for a person at a terminal: bytes sent and rate, redrawn in place on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from faasd.images.thin import LeftOut

BAR_WIDTH = 24
# Redraws at most this often: a fast local upload would otherwise spend its time on the terminal.
REDRAW_SECONDS = 0.1
UNITS = ("B", "kB", "MB", "GB", "TB")


def format_bytes(count: float) -> str:
    """``12.3 MB``: decimal units, as docker shows sizes."""
    for unit in UNITS[:-1]:
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} {UNITS[-1]}"


def progress_line(sent: int, total: int | None, elapsed: float) -> str:
    """One redraw: a bar when the size is known (a file), else what was sent so far (a pipe)."""
    rate = f"{format_bytes(sent / elapsed)}/s" if elapsed > 0 else "-"
    if total:
        done = min(sent / total, 1.0)
        filled = int(done * BAR_WIDTH)
        arrow = ">" if filled < BAR_WIDTH else ""
        bar = ("=" * filled + arrow).ljust(BAR_WIDTH)
        return f"Uploading [{bar}] {done:4.0%}  {format_bytes(sent)} / {format_bytes(total)}  {rate}"
    return f"Uploading  {format_bytes(sent)}  {rate}"


def summary_line(sent: int, elapsed: float, left_out: LeftOut | None = None) -> str:
    """The line left on the terminal once the whole image is sent, with the layers faasd held."""
    rate = f"{format_bytes(sent / elapsed)}/s" if elapsed > 0 else "-"
    held = ""
    if left_out is not None and left_out.layers:
        layers = "layer" if left_out.layers == 1 else "layers"
        held = f", {left_out.layers} {layers} faasd holds left out ({format_bytes(left_out.bytes)})"
    return f"Uploaded {format_bytes(sent)} in {elapsed:.1f} s ({rate}){held}, importing"


class Progress:
    """Counts the blocks of an upload as they pass and redraws one line on ``stream``."""

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        left_out: LeftOut | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total
        self._left_out = left_out
        self._clock = clock
        self._shown = 0  # the length of the line on screen, to blank what a shorter one leaves

    def track(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        """``blocks`` unchanged; the line ends with a summary, or where it was if the upload fails."""
        start = last_draw = self._clock()
        sent = 0
        try:
            for block in blocks:
                yield block
                sent += len(block)
                now = self._clock()
                if now - last_draw >= REDRAW_SECONDS:
                    self._draw(progress_line(sent, self._total, now - start))
                    last_draw = now
            self._draw(summary_line(sent, self._clock() - start, self._left_out))
        finally:
            if self._shown:
                self._stream.write("\n")
                self._stream.flush()

    def _draw(self, line: str) -> None:
        self._stream.write("\r" + line.ljust(self._shown))
        self._stream.flush()
        self._shown = len(line)
