"""One-shot containers hold container slots, as a function's containers do, on the real daemon.

With ``--max-containers 1``, a run-once that is running leaves no slot: a connection to a
function and a second run wait for it in the queue and, past ``--queue-timeout``, get 503.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, Daemon, daemon_range, eventually, http_get, python_daemon

RANGE = daemon_range(58)
SLEEPER = "import time\n\ndef handler(event, context):\n    time.sleep(event['seconds'])\n    return 'slept'\n"
HELLO = "def handler(event, context):\n    return 'hello'\n"
RUN_SECONDS = 6  # well past the queue timeout, and past the checks that follow its start


@pytest.fixture(scope="module")
def daemon(daemon_roots: Path, python_runtime_image: Path) -> Iterator[Daemon]:
    """One slot for the whole daemon, a short queue wait, and no warm container to hold the slot."""
    with python_daemon(
        daemon_roots, python_runtime_image, RANGE, "--max-containers", "1", "--queue-timeout", "1", "--warm", "0"
    ) as daemon:
        yield daemon


def containers_running(daemon: Daemon) -> float:
    """The daemon's ``faasd_containers_running``: the slots taken now."""
    match = re.search(r"^faasd_containers_running (\S+)$", daemon.faas("stats", "--raw").stdout, re.MULTILINE)
    return float(match[1]) if match else 0.0


def start_run(daemon: Daemon, code: Path, seconds: int) -> subprocess.Popen[str]:
    """``faas run`` of ``code`` in the background, its event ``{"seconds": seconds}``."""
    argv = [str(BIN / "faas"), "--socket", str(daemon.socket), "run", "--runtime", "python", "--code", str(code)]
    return subprocess.Popen(
        [*argv, "--input", f'{{"seconds": {seconds}}}'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def sleeper(tmp_path: Path) -> Path:
    code = tmp_path / "sleeper.py"
    code.write_text(SLEEPER)
    return code


def test_a_running_run_once_holds_the_slot_a_connection_needs(daemon: Daemon, tmp_path: Path, sleeper: Path) -> None:
    (tmp_path / "hello.py").write_text(HELLO)
    deployed = daemon.faas("new", "hello", "--runtime", "python", "--code", str(tmp_path / "hello.py"))
    assert deployed.returncode == 0, deployed.stderr
    ip = daemon.faas("ip", "hello").stdout.strip()
    assert eventually(lambda: containers_running(daemon) == 0), "the deploy's check gave its slot back"

    run = start_run(daemon, sleeper, RUN_SECONDS)
    try:
        assert eventually(lambda: containers_running(daemon) == 1), "the run holds a slot"
        status, body = http_get(ip)
        assert status == 503, body
    finally:
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert '"slept"' in out
    assert eventually(lambda: containers_running(daemon) == 0), "the run gave its slot back"
    assert http_get(ip) == (200, b"hello")


def test_a_second_run_once_waits_for_the_slot_then_is_refused(daemon: Daemon, sleeper: Path) -> None:
    first = start_run(daemon, sleeper, RUN_SECONDS)
    try:
        assert eventually(lambda: containers_running(daemon) == 1), "the first run holds the slot"
        second = start_run(daemon, sleeper, 0)
        out, err = second.communicate(timeout=60)
        assert second.returncode != 0, out
        assert "no container slot" in err, err
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert eventually(lambda: containers_running(daemon) == 0)
    again = start_run(daemon, sleeper, 0)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert '"slept"' in out
