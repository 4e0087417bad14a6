"""What fork mode adds to the sandbox (test_sandbox.py runs every default in both modes): two
connections of one function cannot reach each other, a child cannot reach its template, every
request starts from the template's pristine image, and a template that crashes, dies or hangs
costs no connection.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faasd.sandbox.cgroups import ROOT, daemon_parent, hierarchies, is_unified
from tests.integration.conftest import Daemon, daemon_range, discard, eventually, http_get, start_daemon
from tests.integration.test_sandbox import ask


@dataclass
class Forks:
    daemon: Daemon
    probe: str


@pytest.fixture(scope="module")
def forks(daemon_roots: Path, probe_image: Path) -> Iterator[Forks]:
    daemon = start_daemon(daemon_roots, daemon_range(61), "--sandbox", "fork", "--start-timeout", "3")
    yield Forks(daemon, daemon.deploy("probe", probe_image))
    discard(daemon)


def templates(daemon: Daemon, function: str) -> dict[str, int]:
    """The running containers of ``function`` (in fork mode, its templates) by id, with their host pid."""
    listed = subprocess.run(
        ["runc", "--root", str(daemon.root / "run" / "runc"), "list", "--format", "json"],
        capture_output=True,
        check=True,
    )
    found = json.loads(listed.stdout or b"null") or []
    return {c["id"]: c["pid"] for c in found if c["id"].startswith(f"{function}-") and c["status"] == "running"}


def template_process(init: int) -> int:
    """The template process of the container whose pid 1 is ``init``: pid 1's one child."""
    (child,) = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    return int(child)


def test_concurrent_connections_cannot_reach_each_other(forks: Forks) -> None:
    first: dict[str, object] = {}
    leaving = threading.Thread(target=lambda: first.update(answer=ask(forks.probe, "/leave", hold="4")))
    leaving.start()
    try:
        assert eventually(lambda: bool(templates(forks.daemon, "probe")), 10)
        time.sleep(1.5)  # the first connection's child is forked and has left its traces
        status, seen = ask(forks.probe, "/look")
    finally:
        leaving.join()
    assert first["answer"] == (200, {"sysv_shm": True}), "the first connection left every trace"
    assert status == 200
    assert seen == {
        "abstract": "ECONNREFUSED",  # its own network namespace: another abstract socket namespace
        "port": "ECONNREFUSED",  # and another lo
        "files": {"/tmp/trace": False, "/dev/shm/trace": False},
        "sysv_shm": "ENOENT",  # its own ipc namespace
        "signal_all": "ESRCH",  # pid 1 of its own pid namespace: nobody else to signal, template included
        "proc": ["self"],
    }, seen


def test_a_child_cannot_reach_its_template(forks: Forks) -> None:
    assert ask(forks.probe, "/control") == (200, "ECONNREFUSED"), "the template's control socket is closed"
    status, fds = ask(forks.probe, "/fds")
    assert status == 200
    extra = [target for fd, target in fds.items() if int(fd) > 2]
    assert len(fds) == 4 and extra[0].startswith("socket:"), "stdio and the client: not the template's channel"
    status, results = ask(forks.probe, "/syscalls")
    assert (status, results["ptrace"], results["unshare"], results["mount"]) == (200, "EPERM", "EPERM", "EPERM")


def test_every_request_starts_from_the_pristine_template(forks: Forks) -> None:
    answers = [ask(forks.probe, "/remember", value=str(n)) for n in range(3)]
    assert [status for status, _ in answers] == [200] * 3
    assert [answer["previous"] for _, answer in answers] == [None] * 3, "no request sees the last one's global"
    assert len({answer["boot"] for _, answer in answers}) == 1, "all were forked from one template's loaded app"


def test_a_crashing_child_never_takes_the_template_down(forks: Forks) -> None:
    _, before = ask(forks.probe, "/remember", value="x")
    status, body = http_get(forks.probe, "/crash")
    assert status == 502 and b"exited without answering" in body
    status, after = ask(forks.probe, "/remember", value="y")
    assert status == 200 and after["boot"] == before["boot"], "the same template serves on"


def test_a_dead_template_is_replaced_without_losing_a_connection(forks: Forks) -> None:
    ask(forks.probe, "/interfaces")
    running = templates(forks.daemon, "probe")
    assert len(running) == 1
    os.kill(next(iter(running.values())), signal.SIGKILL)
    assert ask(forks.probe, "/interfaces") == (200, ["lo"])
    assert eventually(
        lambda: len(templates(forks.daemon, "probe")) == 1 and templates(forks.daemon, "probe") != running
    )


def test_a_dying_template_takes_no_serving_child_with_it(forks: Forks) -> None:
    ask(forks.probe, "/interfaces")
    running = templates(forks.daemon, "probe")
    assert len(running) == 1
    process = template_process(next(iter(running.values())))
    serving: dict[str, object] = {}
    slow = threading.Thread(target=lambda: serving.update(answer=ask(forks.probe, "/leave", hold="3")))
    slow.start()
    time.sleep(1)  # its child has the connection
    os.kill(process, signal.SIGKILL)
    assert [ask(forks.probe, "/interfaces") for _ in range(4)] == [(200, ["lo"])] * 4, "served on"
    slow.join()
    assert serving["answer"] == (200, {"sysv_shm": True}), "the connection it was serving was not cut"
    assert eventually(lambda: not set(templates(forks.daemon, "probe")) & set(running)), "its container ended after"


def test_a_hung_template_is_replaced_and_its_connection_served(forks: Forks) -> None:
    ask(forks.probe, "/interfaces")
    running = templates(forks.daemon, "probe")
    assert len(running) == 1
    process = template_process(next(iter(running.values())))
    ask(forks.probe, "/interfaces")  # it is in use, not drained for being idle
    os.kill(process, signal.SIGSTOP)  # it takes requests for children and never forks
    # Children forked before it hung serve the first; a child asked of it is asked of a new one
    # after --start-timeout.
    answers = [ask(forks.probe, "/interfaces") for _ in range(6)]
    assert answers == [(200, ["lo"])] * 6
    assert eventually(lambda: not set(templates(forks.daemon, "probe")) & set(running)), "the hung one was killed"


def test_a_handler_without_the_sdk_cannot_be_a_template(forks: Forks, busybox_image: Callable[..., Path]) -> None:
    result = forks.daemon.faas("new", "classic", "-f", str(busybox_image()), "--sandbox", "fork")
    assert result.returncode != 0
    assert "cannot run with --sandbox fork" in result.stderr and "serve() from faas_handler.py" in result.stderr
    assert "classic" not in forks.daemon.faas("list").stdout, "nothing was deployed"
    assert not templates(forks.daemon, "classic")


def test_a_redeploy_drains_the_old_template(forks: Forks, probe_image: Path) -> None:
    slow: dict[str, object] = {}
    serving = threading.Thread(target=lambda: slow.update(answer=ask(forks.probe, "/leave", hold="2")))
    serving.start()
    assert eventually(lambda: bool(templates(forks.daemon, "probe")))
    old = templates(forks.daemon, "probe")
    forks.daemon.deploy("probe", probe_image, "--force")
    serving.join()
    assert slow["answer"] == (200, {"sysv_shm": True}), "the connection in flight finished on the old template"
    assert ask(forks.probe, "/interfaces") == (200, ["lo"])
    assert eventually(lambda: not set(templates(forks.daemon, "probe")) & set(old)), "the old template is gone"


def connection_cgroups(daemon: Daemon) -> set[Path]:
    """The per-connection cgroup directories of ``daemon``, in every hierarchy."""
    parent = daemon_parent(daemon.state_dir)
    trees = [ROOT / hierarchy / parent for hierarchy in hierarchies(is_unified())]
    return {child for tree in trees if tree.is_dir() for child in tree.iterdir() if child.is_dir()}


def hold(ip: str, count: int) -> list[socket.socket]:
    """``count`` connections whose request head is not over: each child waits for the rest."""
    held = [socket.create_connection((ip, 80), timeout=30) for _ in range(count)]
    for sock in held:
        sock.sendall(b"GET /interfaces HTTP/1.1\r\nHost: probe\r\n")
    return held


def test_a_killed_daemons_cgroups_are_swept_at_its_start_and_no_other_daemons(
    make_daemon: Callable[..., Daemon], probe_image: Path
) -> None:
    killed = make_daemon(daemon_range(62), "--sandbox", "fork", "--warm", "0")
    other = make_daemon(daemon_range(63), "--sandbox", "fork", "--warm", "0")
    assert daemon_parent(killed.state_dir) != daemon_parent(other.state_dir)
    held = hold(killed.deploy("probe", probe_image), 3)
    theirs = hold(other.deploy("probe", probe_image), 1)
    try:
        assert eventually(lambda: len(connection_cgroups(killed)) == 3 * len(hierarchies(is_unified())))
        assert eventually(lambda: len(connection_cgroups(other)) == len(hierarchies(is_unified())))
        stale, others = connection_cgroups(killed), connection_cgroups(other)
        killed.stop(signal.SIGKILL)
        assert connection_cgroups(killed) == stale, "a daemon killed with SIGKILL removes nothing"
        killed.start()
        assert not connection_cgroups(killed) & stale, "the start swept them"
        assert connection_cgroups(other) == others, "the other daemon's cgroups are its own"
        theirs[0].sendall(b"\r\n")  # the other daemon's connection was never touched: it is served
        assert theirs[0].recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held + theirs:
            sock.close()
    other.stop()
    assert not connection_cgroups(other), "a daemon that stops removes its cgroups"
    assert not any((ROOT / h / daemon_parent(other.state_dir)).exists() for h in hierarchies(is_unified()))
