"""Each sandbox default, attacked from inside a real sandbox by the probe handler.

One daemon serves two deployments of the probe image: ``probe`` with the default limits and
``tight`` with small ones. Every test ends by checking both still serve. Every test runs in both
sandbox modes: a runc container per connection, and a child forked from a template (fork mode).
"""

from __future__ import annotations

import json
import os
import platform
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from faasd.config import USERNS_IDS
from faasd.limits import MIB
from faasd.sandbox.template import FORK_ROOT_UID
from tests.integration.conftest import Daemon, daemon_range, http_get, start_daemon

USERNS_BASE = 2_000_000_000
NO_CAPABILITIES = "0000000000000000"
TIGHT = {"memory": "64m", "pids": "32", "timeout": "3", "tmp-size": "1m", "cpus": "0.25"}


MODES = {"runc": 4, "fork": 60}  # each mode's daemon range


@dataclass
class Sandbox:
    daemon: Daemon
    probe: str
    tight: str
    bare: str  # --tmp-size 0
    mode: str


@pytest.fixture(scope="module", params=list(MODES))
def sandbox(request: pytest.FixtureRequest, daemon_roots: Path, probe_image: Path) -> Iterator[Sandbox]:
    mode = request.param
    daemon = start_daemon(daemon_roots, daemon_range(MODES[mode]), "--sandbox", mode)
    tight_args = [arg for key, value in TIGHT.items() for arg in (f"--{key}", value)]
    sandbox = Sandbox(
        daemon,
        daemon.deploy("probe", probe_image),
        daemon.deploy("tight", probe_image, *tight_args),
        daemon.deploy("bare", probe_image, "--tmp-size", "0"),
        mode,
    )
    yield sandbox
    daemon.stop()


def ask(ip: str, path: str, **query: str | list[str]) -> tuple[int, object]:
    status, body = http_get(ip, f"{path}?{urlencode(query, doseq=True)}")
    return status, json.loads(body)


@pytest.fixture(autouse=True)
def both_still_serve(sandbox: Sandbox) -> Iterator[None]:
    yield
    for ip in (sandbox.probe, sandbox.tight, sandbox.bare):
        assert ask(ip, "/interfaces")[0] == 200, "an attack must not stop the daemon serving"


def test_container_root_is_an_unprivileged_host_uid_without_capabilities(sandbox: Sandbox) -> None:
    status, me = ask(sandbox.probe, "/identity")
    assert status == 200
    if sandbox.mode == "runc":
        assert (me["uid"], me["gid"]) == (0, 0)
        assert me["uid_map"] == ["0", str(USERNS_BASE), str(USERNS_IDS)]
    else:  # a nested user namespace, mapping only itself; its template never runs as root
        assert (me["uid"], me["gid"]) == (FORK_ROOT_UID, 0)
        assert me["uid_map"] == [str(FORK_ROOT_UID), str(FORK_ROOT_UID), "1"]
    assert set(me["caps"].values()) == {NO_CAPABILITIES}
    assert (me["no_new_privs"], me["seccomp"]) == ("1", "2")
    assert me["rootfs_read"] > 0, "the shifted read-only rootfs stays readable"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the probe knows x86_64 system call numbers")
def test_seccomp_refuses_what_a_function_never_needs(sandbox: Sandbox) -> None:
    status, results = ask(sandbox.probe, "/syscalls")
    assert status == 200
    # keyctl, ptrace, unshare(CLONE_NEWUSER) and clone(CLONE_NEWUSER) succeed without capabilities:
    # their EPERM is the filter's doing, not the capability set's.
    assert results.pop("clone3") == "ENOSYS", "clone3 must fall back to clone, whose flags the filter sees"
    assert results == dict.fromkeys(results, "EPERM")


def test_the_network_is_lo_alone_and_reaches_nothing_on_the_host(sandbox: Sandbox) -> None:
    abstract = f"@faasd-probe-{os.getpid()}"
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        tcp.setblocking(False)
        unix.bind("\0" + abstract[1:])
        unix.listen()
        unix.setblocking(False)
        targets = {"tcp": [f"127.0.0.1:{tcp.getsockname()[1]}", f"{sandbox.tight}:80"]}
        targets["unix"] = [str(sandbox.daemon.socket), abstract]
        status, results = ask(sandbox.probe, "/connect", **targets)
        assert status == 200
        assert "ok" not in results.values(), results
        for listener in (tcp, unix):
            with pytest.raises(BlockingIOError):
                listener.accept()
    assert ask(sandbox.probe, "/interfaces") == (200, ["lo"])


def test_proc_sys_and_the_rootfs_are_masked_or_read_only(sandbox: Sandbox) -> None:
    masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"]
    read_only = ["/proc/sysrq-trigger", "/proc/sys/kernel/hostname", "/sys/kernel/uevent_helper"]
    read_only += ["/etc/passwd", "/app/app.py", "/new-file", "/dev/new-file"]
    status, results = ask(sandbox.probe, "/files", read=masked, write=[*read_only, "/tmp/scratch"])
    assert status == 200
    assert all(results["read"][path] in (0, "EACCES", "ENOENT", "EPERM") for path in masked), results["read"]
    assert results["write"].pop("/tmp/scratch") == "ok", "/tmp is the one writable place"
    assert "ok" not in results["write"].values(), results["write"]


def test_only_the_standard_devices_exist(sandbox: Sandbox) -> None:
    status, found = ask(sandbox.probe, "/devices")
    assert status == 200
    assert set(found) <= {"null", "zero", "full", "random", "urandom", "tty"}, found
    assert set(found.values()) == {"char"}


def test_no_host_descriptor_but_stdio_and_the_client(sandbox: Sandbox) -> None:
    """The fd-leak class of CVE-2024-21626: nothing of the daemon's or runc's reaches the handler."""
    status, fds = ask(sandbox.probe, "/fds")
    assert status == 200
    extra = {fd: target for fd, target in fds.items() if int(fd) > 2}
    assert len(extra) == 1 and next(iter(extra.values())).startswith("socket:"), fds


def test_the_control_socket_hands_over_one_client_once(sandbox: Sandbox) -> None:
    assert ask(sandbox.probe, "/control") == (200, "ECONNREFUSED")


def test_limits_are_stored_with_the_version_and_shown(sandbox: Sandbox) -> None:
    listed = {f["name"]: f["limits"] for f in json.loads(sandbox.daemon.faas("list", "--json").stdout)}
    assert listed["tight"] == {
        "memory_bytes": 64 * MIB,
        "cpus": 0.25,
        "pids": 32,
        "timeout_seconds": 3.0,
        "tmp_bytes": 1 * MIB,
        "warm": 4,
        "reuse": 1,
        "sandbox": sandbox.mode,
    }
    assert listed["probe"]["memory_bytes"] == 256 * MIB


def test_a_memory_hog_is_killed_and_its_client_gets_502(sandbox: Sandbox) -> None:
    status, body = http_get(sandbox.tight, "/memory")
    assert status == 502 and b"exited without answering" in body


def test_a_fork_bomb_hits_the_pids_limit(sandbox: Sandbox) -> None:
    status, result = ask(sandbox.tight, "/fork")
    assert status == 200
    assert result["error"] == "EAGAIN" and result["children"] < 32


def test_a_spinner_is_killed_at_the_deadline_and_its_client_gets_504(sandbox: Sandbox) -> None:
    status, body = http_get(sandbox.tight, "/spin")
    assert status == 504 and b"deadline" in body


def test_tmp_is_a_small_tmpfs(sandbox: Sandbox) -> None:
    status, result = ask(sandbox.tight, "/tmp")
    assert status == 200
    assert result["error"] == "ENOSPC" and result["written"] <= 1 * MIB


def test_dev_shm_is_no_larger_than_tmp(sandbox: Sandbox) -> None:
    status, result = ask(sandbox.tight, "/tmp", dir="/dev/shm")
    assert status == 200
    assert result["error"] == "ENOSPC" and result["written"] <= 1 * MIB


def test_a_tmp_size_of_zero_leaves_nothing_writable(sandbox: Sandbox) -> None:
    for directory in ("/tmp", "/dev/shm"):
        assert ask(sandbox.bare, "/tmp", dir=directory) == (200, {"written": 0, "error": "EROFS"}), directory


def test_vsock_is_refused_by_the_filter(sandbox: Sandbox) -> None:
    """vsock has no network namespace: it would reach the hypervisor past the container's lo."""
    assert ask(sandbox.probe, "/vsock") == (200, "EPERM")


def test_the_cpu_limit_holds_two_busy_threads_to_a_quarter_cpu(sandbox: Sandbox) -> None:
    status, result = ask(sandbox.tight, "/cpu")
    assert status == 200
    # Unlimited, two threads burn about two CPU-seconds in one second; a quarter CPU allows 0.25.
    assert result["cpu_seconds"] < 0.5, result
