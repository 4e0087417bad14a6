"""Text from outside, made safe for a terminal: every control visible, nothing else touched."""

from __future__ import annotations

import pytest

from faasd.printable import printable, printable_lines

# (what a function, image or client sent, what a terminal or log line gets)
HOSTILE = [
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clear the screen, cursor home
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # retitle the window, BEL
    ("ok\rFAKE", "ok\\rFAKE"),  # CR: overwrite what was printed
    ("row\r\nforged row", "row\\r\\nforged row"),  # a line (or table row) of its own
    ("\x9b31m", "\\x9b31m"),  # C1 CSI
    ("\x00\x7f\x85", "\\x00\\x7f\\x85"),  # NUL, DEL, NEL
    ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # Unicode line and paragraph separators
    ("user\u202e\u2066txt.exe", "user\\u202e\\u2066txt.exe"),  # bidirectional overrides
    ("tab\there", "tab\\there"),
]


@pytest.mark.parametrize(("text", "shown"), HOSTILE)
def test_controls_are_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).isprintable()


@pytest.mark.parametrize("text", ["hello", "ünïcödé ✓ 日本", "C:\\path\\x1b", "emoji 👩‍💻", "a b\u00a0c"])
def test_printable_text_passes_unchanged(text: str) -> None:
    assert printable(text) == text


def test_every_c0_and_c1_control_is_escaped() -> None:
    controls = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
    assert printable(controls).isprintable() and printable(controls).isascii()


def test_a_limit_cuts_and_says_how_much() -> None:
    assert printable("x" * 100, limit=10) == "x" * 10 + "...[90 more]"
    assert printable("\x1b" * 5, limit=2) == "\\x1b\\x1b...[3 more]"
    assert printable("short", limit=10) == "short"


def test_lines_keep_their_newlines_and_tabs() -> None:
    assert printable_lines("one\x1b[1m\n\ttwo\r\n") == "one\\x1b[1m\n\ttwo\\r\n"
