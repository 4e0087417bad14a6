"""Text that a function, an image or a client supplied, made safe for a terminal or a log line.

Such text may carry terminal controls (ESC sequences that move the cursor, retitle the window or
rewrite what was printed, BEL, a CR that overwrites a line) or line breaks that forge a record
of their own. Every C0 and C1 control, DEL, the Unicode line and paragraph separators and the
bidirectional controls ("Trojan Source", CVE-2021-42574) are written as visible escapes instead:
``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u202e``. Everything else, other non-ASCII text included,
passes unchanged.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
UNSAFE = (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *BIDI_CONTROLS)


def _escape(code: int) -> str:
    char = chr(code)
    if char in NAMED:
        return NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


ESCAPES = {code: _escape(code) for code in UNSAFE}
# The same, leaving line ends and tabs alone: for text whose lines a reader splits itself.
ESCAPES_KEEPING_LINES = {code: escape for code, escape in ESCAPES.items() if chr(code) not in "\n\t"}


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with every control escaped; with ``limit``, cut to that many characters first."""
    if limit is not None and len(text) > limit:
        return text[:limit].translate(ESCAPES) + f"...[{len(text) - limit} more]"
    return text.translate(ESCAPES)


def printable_lines(text: str) -> str:
    """``text`` with every control escaped but its newlines and tabs: it keeps its lines."""
    return text.translate(ESCAPES_KEEPING_LINES)


def printable_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """UTF-8 ``chunks`` (a log as it streams) with controls escaped but newlines and tabs.

    A character split across two chunks is decoded whole; bytes that are not UTF-8 (a raw C1
    control among them) are shown as ``\\xNN``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    for chunk in chunks:
        if text := decoder.decode(chunk):
            yield printable_lines(text).encode()
    if rest := decoder.decode(b"", final=True):
        yield printable_lines(rest).encode()
