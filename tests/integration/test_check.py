"""``faas new --check`` with the real daemon: a version whose handler exits or never connects is
refused, with its last log lines, before it is registered; a working one deploys as usual. The
check of a pulled image is in test_pull.py."""

from __future__ import annotations

import json

from tests.integration.conftest import add_python_runtime, daemon_range, first_ip, http_get


def test_a_broken_handler_is_refused_at_deploy_time_with_its_last_lines(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(73), "--start-timeout", "2")
    ip = first_ip(daemon_range(73))
    checked = daemon.faas("new", "hello", "-f", str(busybox_image("v1")), "--check")
    assert checked.returncode == 0 and "Deployed hello" in checked.stdout, checked.stderr

    exits = busybox_image("v2", prelude="echo 'cannot import app' >&2; exit 3")
    refused = daemon.faas("new", "hello", "-f", str(exits), "--check")
    assert refused.returncode == 1
    assert refused.stderr == (
        "faas: the check of hello version 2 failed: its container exited before its handler connected to "
        "/control.sock (exit status 3); nothing deployed. Its last lines: [stderr] cannot import app\n"
    )
    assert [row.split()[0] for row in daemon.faas("versions", "hello").stdout.splitlines()[1:]] == ["1"]
    assert sorted(p.name for p in (daemon.state_dir / "images" / "hello").iterdir()) == ["1"]
    assert http_get(ip) == (200, b"v1\n"), "the current version still serves"
    assert "outcome=check_start_failed exit=3" in daemon.faas("logs", "hello").stdout

    silent = busybox_image("v3", prelude="echo 'waiting for nothing'; sleep 30")
    refused = daemon.faas("new", "hello", "-f", str(silent), "--check")
    assert refused.returncode == 1 and "its handler did not connect to /control.sock within --start-timeout" in (
        refused.stderr
    )
    assert refused.stderr.endswith("Its last lines: [stdout] waiting for nothing\n")

    unchecked = daemon.faas("new", "hello", "-f", str(exits))
    assert unchecked.returncode == 0, "without --check it deploys, as before"
    assert http_get(ip)[0] == 502


def test_a_new_function_that_fails_its_check_leaves_nothing(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(74))
    refused = daemon.faas("new", "broken", "-f", str(busybox_image("x", prelude="exit 1")), "--check")
    assert refused.returncode == 1 and "the check of broken version 1 failed" in refused.stderr
    assert "Its last lines: (none)" in refused.stderr
    assert daemon.faas("list", "--json").stdout.strip() == "[]"
    assert not (daemon.state_dir / "images" / "broken").exists()
    assert not (daemon.state_dir / "logs" / "broken").exists()


SLOW = """import time

print("loading the model", flush=True)
time.sleep(4)


def handler(event, context):
    return "ready"
"""


def test_a_source_function_that_loads_but_never_gets_ready_is_refused(
    make_daemon, python_runtime_image, tmp_path
) -> None:
    """Loading the code (the deploy's own check) takes as long as it takes; serving must start
    within --start-timeout, and only --check finds out before the first client does."""
    daemon = make_daemon(daemon_range(75), "--start-timeout", "2", "--warm", "0")
    add_python_runtime(daemon, python_runtime_image)
    fast = tmp_path / "fast.py"
    fast.write_text("def handler(event, context):\n    return 'ready'\n")
    checked = daemon.faas("new", "model", "--runtime", "python", "--code", str(fast), "--check")
    assert checked.returncode == 0 and "Deployed model" in checked.stdout, checked.stderr

    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    refused = daemon.faas("new", "model", "--runtime", "python", "--code", str(slow), "--check")
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "faas: the check of model version 2 failed: its handler did not connect to /control.sock within --start-timeout"
    ), refused.stderr
    assert refused.stderr.endswith("nothing deployed. Its last lines: [stdout] loading the model\n")
    assert [v["version"] for v in json.loads(daemon.faas("versions", "model", "--json").stdout)["versions"]] == [1]
    assert sorted(p.name for p in (daemon.state_dir / "images" / "model").iterdir()) == ["1"]

    unchecked = daemon.faas("new", "model", "--runtime", "python", "--code", str(slow))
    assert unchecked.returncode == 0 and "version 2" in unchecked.stdout, "without --check it deploys, as before"
