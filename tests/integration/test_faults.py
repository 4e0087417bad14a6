"""Deploys that collide or run out of room, and traffic during redeploys and removals."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon, daemon_range, eventually, http_get, new_daemon
from tests.integration.faulty import (
    api,
    bundles,
    busybox_variant,
    containers,
    deployed,
    read_to_close,
    runc,
    wait_for_handler,
    zeros_layer,
)


@pytest.fixture
def small_disk_daemon(daemon_roots: Path) -> Iterator[Daemon]:
    """A daemon whose state dir is a 24 MiB tmpfs: room for a few busybox images, not for more."""
    daemon = new_daemon(daemon_roots, daemon_range(20))
    daemon.state_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0711", "faasd-test", str(daemon.state_dir)], check=True
    )
    try:
        daemon.start()
        yield daemon
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None:
            daemon.stop()
        subprocess.run(["umount", str(daemon.state_dir)], check=True)


def used_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def test_disk_full_mid_import_is_a_clean_507(small_disk_daemon: Daemon, busybox_image, tmp_path: Path) -> None:
    daemon = small_disk_daemon
    ip = daemon.deploy("fat", busybox_image("thin version"))
    before = used_bytes(daemon.state_dir)
    # 64 MiB of zeros gzip to a small upload that fits; unpacking it does not.
    too_big = busybox_variant(
        busybox_image(), tmp_path / "fat.tar", ["/bin/hello", "fat"], (zeros_layer(tmp_path / "z.tar", 64 << 20),)
    )
    assert too_big.stat().st_size < 4 << 20

    status, answer = api(daemon, "POST", "/v1/functions/fat", too_big.read_bytes())
    assert (status, answer) == (
        507,
        {"error": "layer 2: the disk filled up while unpacking the image: free space and deploy again"},
    )
    assert sorted(p.name for p in (daemon.state_dir / "images" / "fat").iterdir()) == ["1"]
    assert list((daemon.state_dir / "uploads").iterdir()) == []
    assert used_bytes(daemon.state_dir) <= before + (64 << 10), "nothing of the failed import is left"
    assert http_get(ip) == (200, b"thin version\n")
    assert json.loads(daemon.faas("list", "--json").stdout)[0]["version"] == 1

    assert daemon.deploy("fat", busybox_image("thin again")) == ip, "the freed space is usable"
    assert http_get(ip) == (200, b"thin again\n")


def test_upload_that_fills_the_disk_is_a_clean_507(small_disk_daemon: Daemon, tmp_path: Path) -> None:
    daemon = small_disk_daemon
    before = used_bytes(daemon.state_dir)
    status, answer = api(daemon, "POST", "/v1/functions/huge", os.urandom(32 << 20))
    assert status == 507
    assert answer["error"].startswith("cannot store the upload under "), answer
    assert list((daemon.state_dir / "uploads").iterdir()) == []
    assert used_bytes(daemon.state_dir) <= before + (64 << 10)
    assert daemon.faas("list", "--json").stdout.strip() == "[]"


def test_concurrent_deploys_of_one_name(daemon: Daemon, busybox_image) -> None:
    bodies = [f"racer {i}" for i in range(5)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda body: daemon.faas("new", "racer", "-f", str(busybox_image(body))), bodies))
    reports = [deployed(result) for result in results]
    assert {ip for _, ip, _ in reports} == {reports[0][1]}, "one function, one address"
    assert sorted(version for _, _, version in reports) == [1, 2, 3, 4, 5]
    ip, last = reports[0][1], bodies[[version for _, _, version in reports].index(5)]
    (function,) = json.loads(daemon.faas("list", "--json").stdout)
    assert (function["ip"], function["version"]) == (ip, 5)
    assert http_get(ip) == (200, f"{last}\n".encode()), "the last version acknowledged serves"
    assert sorted(p.name for p in (daemon.state_dir / "images" / "racer").iterdir()) == ["3", "4", "5"]


def test_concurrent_first_deploys_get_distinct_addresses(daemon: Daemon, busybox_image) -> None:
    image = str(busybox_image("twin"))
    names = [f"twin-{i}" for i in range(5)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        reports = list(pool.map(lambda name: deployed(daemon.faas("new", name, "-f", image)), names))
    assert sorted(name for name, _, _ in reports) == names
    assert len({ip for _, ip, _ in reports}) == 5
    assert all(http_get(ip) == (200, b"twin\n") for _, ip, _ in reports)


def hammer(ip: str, stop: threading.Event) -> Counter[object]:
    """GET ``ip`` on new connections until ``stop``; count statuses and connection errors."""
    outcomes: Counter[object] = Counter()
    while not stop.is_set():
        try:
            status, body = http_get(ip, timeout=30)
            outcomes[(status, body)] += 1
        except OSError as exc:
            outcomes[type(exc).__name__] += 1
    return outcomes


def test_redeploys_under_traffic_fail_no_request(daemon: Daemon, busybox_image) -> None:
    images = [busybox_image(f"generation {i % 2}") for i in range(2)]
    ip = daemon.deploy("busy", images[0])
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=4) as pool:
        clients = [pool.submit(hammer, ip, stop) for _ in range(4)]
        for generation in range(1, 7):
            result = daemon.faas("new", "busy", "-f", str(images[generation % 2]))
            assert result.returncode == 0, result.stderr
        stop.set()
        outcomes = sum((c.result() for c in clients), Counter())
    assert set(outcomes) <= {(200, b"generation 0\n"), (200, b"generation 1\n")}, outcomes
    assert sum(outcomes.values()) > 20
    assert eventually(lambda: not bundles(daemon))


def test_a_running_connection_keeps_its_rootfs_through_redeploys(daemon: Daemon, busybox_image, tmp_path: Path) -> None:
    greeting = tmp_path / "greeting.tar"
    with tarfile.open(greeting, "w") as tar:
        entry = tarfile.TarInfo("etc/greeting")
        entry.size = len(b"first")
        tar.addfile(entry, io.BytesIO(b"first"))
    # The handler reads its image only when told to (a file the test puts in its /tmp).
    script = 'while [ ! -e /tmp/go ]; do sleep 0.05; done; exec hello "$(cat /etc/greeting)"'
    ip = daemon.deploy(
        "keeper",
        busybox_variant(busybox_image(), tmp_path / "v1.tar", ["/bin/sh", "-c", script], (greeting,)),
        "--warm",
        "0",  # the one container is the connection's (test_pool.py: warm ones through redeploys)
    )
    first_rootfs = daemon.state_dir / "images" / "keeper" / "1"
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(http_get, ip)
        assert eventually(lambda: len(containers(daemon)) == 1)
        (container_id,) = containers(daemon)
        for generation in range(3):  # version 1 falls out of the three kept
            daemon.deploy("keeper", busybox_image(f"later {generation}"))
        assert first_rootfs.exists(), "a version stays on disk while a connection runs on it"
        touched = runc(daemon, "exec", container_id, "/bin/touch", "/tmp/go")
        assert touched.returncode == 0, touched.stderr
        assert answer.result() == (200, b"first\n")
    assert eventually(lambda: not first_rootfs.exists()), "and goes when that connection ends"
    assert http_get(ip) == (200, b"later 2\n")


def test_rm_ends_only_its_own_connections(daemon: Daemon, busybox_image) -> None:
    doomed_ip = daemon.deploy("doomed", busybox_image("doomed"))
    kept_ip = daemon.deploy("kept", busybox_image("kept"))
    with (
        socket.create_connection((doomed_ip, 80), timeout=5) as doomed,
        socket.create_connection((kept_ip, 80), timeout=5) as kept,
    ):
        wait_for_handler(daemon, doomed)
        wait_for_handler(daemon, kept)
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=2) as pool:
            traffic = pool.submit(hammer, kept_ip, stop)
            time.sleep(0.5)
            assert daemon.faas("rm", "doomed").returncode == 0
            assert read_to_close(doomed, 5) == b"", "rm ended the removed function's connection"
            time.sleep(0.5)
            stop.set()
            assert set(traffic.result()) == {(200, b"kept\n")}
        kept.sendall(b"GET / HTTP/1.1\r\nHost: kept\r\n\r\n")
        assert read_to_close(kept, 5).endswith(b"\r\n\r\nkept\n"), "the other function's connection lived on"
    assert eventually(lambda: not containers(daemon) and not bundles(daemon))
