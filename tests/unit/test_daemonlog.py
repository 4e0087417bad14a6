"""The daemon's own log: one line per record whatever a value holds; floods become a count."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.daemonlog import FIELD_CHARS, EscapingFormatter, Throttle, clipped

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the daemon's formatter into a buffer, as to stderr."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("faasd.test-daemonlog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def test_a_value_cannot_forge_a_line_or_reach_the_terminal(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    image = "app\x1b[2J\r\n2026-01-01 00:00:00,000 INFO faasd.api deployed function=admin\x07"
    log.info("deployed image=%s", image)
    assert out.getvalue().count("\n") == 1
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "image=app\\x1b[2J\\r\\n2026-01-01" in out.getvalue()


def test_a_traceback_keeps_its_lines_and_loses_its_controls(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    try:
        raise ValueError("bad \x1b]0;title\x07 value")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert text.startswith("ERROR failed\nTraceback") and "bad \\x1b]0;title\\x07 value" in text
    assert "\x1b" not in text and "\x07" not in text


def test_a_huge_message_is_cut(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    log.info("value=%s", "x" * 100_000)
    assert len(out.getvalue()) < 5000 and "more]" in out.getvalue()


def test_clipped_values_are_short_and_escaped() -> None:
    assert clipped("\x1b" + "h" * 1000) == "\\x1b" + "h" * (FIELD_CHARS - 1) + "...[881 more]"
    assert clipped(OSError(5, "Input/output error")) == "[Errno 5] Input/output error"


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_writes_a_burst_then_a_count(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    clock = Clock()
    throttle = Throttle(log, per_second=2, burst=5, clock=clock)
    for i in range(1000):
        throttle.log(logging.INFO, "refused n=%d", i)
    assert out.getvalue().splitlines() == [f"INFO refused n={i}" for i in range(5)]
    clock.now += 0.5  # one line's worth
    throttle.log(logging.INFO, "refused n=%d", 1000)
    throttle.log(logging.INFO, "refused n=%d", 1001)
    assert out.getvalue().splitlines()[5:] == ["INFO refused n=1000 suppressed=995"]
    clock.now += 3600  # a quiet hour refills the burst, no more
    for i in range(10):
        throttle.log(logging.INFO, "refused n=%d", 2000 + i)
    assert out.getvalue().splitlines()[6:] == ["INFO refused n=2000 suppressed=1"] + [
        f"INFO refused n={2000 + i}" for i in range(1, 5)
    ]


ROTATE = """
import logging, sys
from pathlib import Path
from faasd import daemonlog
daemonlog.LOG_FILE_BYTES = 64 * 1024
daemonlog.LOG_FILE_BACKUPS = 2
daemonlog.configure(Path(sys.argv[1]))
log = logging.getLogger("faasd.test")
for i in range(2000):
    log.info("line=%d %s", i, "x" * 100)
print("stray line on stderr", file=sys.stderr, flush=True)
"""


def test_a_log_file_rotates_by_size_and_stderr_follows_it(tmp_path: Path) -> None:
    """In a process of its own: the log takes over the process's stderr."""
    path = tmp_path / "faasd.log"
    subprocess.run([sys.executable, "-c", ROTATE, str(path)], check=True, timeout=60, cwd=REPO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faasd.log", "faasd.log.1", "faasd.log.2"]
    assert all(p.stat().st_size <= 64 * 1024 for p in tmp_path.iterdir())
    current = path.read_text()
    assert "line=1999 " in current and current.endswith("stray line on stderr\n"), "stderr goes to the current file"
