"""The daemon killed (-9) or stopped (SIGTERM, twice) at awkward moments, and what the next start finds."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from tests.integration.conftest import BIN, Daemon, daemon_range, eventually, http_get
from tests.integration.faulty import (
    bundles,
    busybox_variant,
    containers,
    deployed,
    read_to_close,
    wait_for_handler,
    zeros_layer,
)

BODIES = ("even", "odd")


def faas_aliases() -> set[str]:
    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(label="lo:faas")}


def kill_hard(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(timeout=30)
    daemon.proc = None


def listed(daemon: Daemon) -> dict[str, tuple[str, int]]:
    """Each registered function's (ip, version)."""
    return {f["name"]: (f["ip"], f["version"]) for f in json.loads(daemon.faas("list", "--json").stdout)}


def assert_no_leftovers(daemon: Daemon) -> None:
    """What only a crash leaves: containers, bundles (with control sockets), uploads, half rootfs and layers."""
    assert containers(daemon) == {}
    assert bundles(daemon) == []
    assert list((daemon.state_dir / "uploads").iterdir()) == []
    assert list((daemon.state_dir / "images").glob("*/.tmp-*")) == []
    assert list((daemon.state_dir / "layers").glob(".tmp-*")) == []


@dataclass
class Acknowledged:
    """What the daemon acknowledged before it was killed: functions by name, bodies by version."""

    ips: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    failed_at: list[float] = field(default_factory=list)


def deploy_until(daemon: Daemon, stop: threading.Event, images: dict[str, Path], acked: Acknowledged) -> None:
    """Redeploy ``alpha`` (odd versions answer "odd", even ones "even") and add new functions."""
    for index in range(1000):
        if stop.is_set():
            return
        if index % 2:
            name, image = "alpha", images[BODIES[(acked.versions["alpha"] + 1) % 2]]
        else:
            name, image = f"new-{index}", images["newcomer"]
        result = daemon.faas("new", name, "-f", str(image))
        if result.returncode != 0:
            acked.failed_at.append(time.monotonic())
            return
        _, ip, version = deployed(result)
        acked.ips[name] = ip
        acked.versions[name] = version


def request_until(ip: str, stop: threading.Event) -> int:
    answered = 0
    while not stop.is_set():
        try:
            http_get(ip, timeout=10)
            answered += 1
        except OSError:
            pass  # the daemon was killed under this request: expected here
    return answered


def test_kill_9_under_load_then_restart(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(12))
    images = {body: busybox_image(body) for body in (*BODIES, "newcomer", "beta")}
    acked = Acknowledged()
    acked.ips["alpha"] = daemon.deploy("alpha", images["odd"])
    acked.versions["alpha"] = 1
    beta_ip = daemon.deploy("beta", images["beta"])
    # A client that never sends its request keeps one handler, its container and bundle alive.
    held = socket.create_connection((beta_ip, 80), timeout=5)
    wait_for_handler(daemon, held)

    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=9) as pool:
        deployer = pool.submit(deploy_until, daemon, stop, images, acked)
        requesters = [pool.submit(request_until, ip, stop) for ip in [acked.ips["alpha"], beta_ip] * 4]
        # Kill once a redeploy and a new function were acknowledged under the load.
        assert eventually(lambda: acked.versions["alpha"] >= 2 and len(acked.versions) >= 3, 60)
        killed_at = time.monotonic()
        kill_hard(daemon)
        stop.set()
        deployer.result()
        answered = sum(r.result() for r in requesters)
    assert all(t >= killed_at for t in acked.failed_at), "deploys failed only when the daemon died"
    assert answered > 0, "there was load when the daemon died"
    assert containers(daemon) and bundles(daemon), "the crash left containers and bundles behind"

    daemon.start()
    assert_no_leftovers(daemon)
    assert read_to_close(held, 5) == b"", "the leftover handler was killed, closing its connection"
    held.close()
    now = listed(daemon)
    for name, ip in acked.ips.items():
        assert now[name][0] == ip, f"{name} came back at another address"
        assert now[name][1] >= acked.versions[name], f"{name} lost an acknowledged version"
    assert {ip for ip, _ in now.values()} <= faas_aliases()
    for name, (ip, version) in now.items():
        body = BODIES[version % 2] if name == "alpha" else "beta" if name == "beta" else "newcomer"
        assert http_get(ip) == (200, f"{body}\n".encode()), name
    assert eventually(lambda: not bundles(daemon))


def test_kill_9_mid_import_keeps_the_old_version(make_daemon, busybox_image, tmp_path: Path) -> None:
    daemon = make_daemon(daemon_range(13))
    ip = daemon.deploy("big", busybox_image("old version"))
    # 256 MiB of zeros: a tiny gzip upload whose import takes seconds.
    big = busybox_variant(
        busybox_image(),
        tmp_path / "big.tar",
        ["/bin/hello", "new version"],
        (zeros_layer(tmp_path / "z.tar", 256 << 20),),
    )
    upload = subprocess.Popen(
        [str(BIN / "faas"), "--socket", str(daemon.socket), "new", "big", "-f", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    function_dir = daemon.state_dir / "images" / "big"
    layers = daemon.state_dir / "layers"
    assert eventually(lambda: any(layers.glob(".tmp-*/zeros-0")), 30), "the import never started"
    kill_hard(daemon)
    assert upload.wait(timeout=30) != 0, "the interrupted deploy was not acknowledged"
    assert list(function_dir.glob(".tmp-*")), "the crash left a half-imported version"
    assert list(layers.glob(".tmp-*")), "and a half-unpacked layer"
    layers_before = sorted((layers / "sha256").iterdir())

    daemon.start()
    assert_no_leftovers(daemon)
    assert sorted(p.name for p in function_dir.iterdir()) == ["1"]
    assert sorted((layers / "sha256").iterdir()) == layers_before, "the half layer never got its name"
    assert listed(daemon) == {"big": (ip, 1)}
    assert http_get(ip) == (200, b"old version\n")


def test_sigterm_lets_running_requests_finish(make_daemon, probe_image: Path) -> None:
    daemon = make_daemon(daemon_range(14), "--drain-timeout", "10")
    # Slow to answer, quick to start: starts take turns, and a handler slow to connect would
    # hold its turn, so three would never run at once on a machine of two CPUs.
    ip = daemon.deploy("slowpoke", probe_image, "--warm", "0")  # every container is a running request's
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = [pool.submit(http_get, ip, "/sleep?s=3") for _ in range(3)]
        assert eventually(lambda: len(containers(daemon)) == 3)
        proc = daemon.proc
        proc.send_signal(signal.SIGTERM)
        with socket.socket() as probe:
            assert eventually(lambda: probe.connect_ex((ip, 80)) != 0, 1), "new connections are refused at once"
        assert proc.poll() is None, "while the running ones drain"
        assert [a.result() for a in answers] == [(200, b'{"slept": 3.0}\n')] * 3
    assert proc.wait(timeout=10) == 0
    daemon.proc = None
    assert containers(daemon) == {} and bundles(daemon) == []
    assert ip not in faas_aliases()
    assert not daemon.socket.exists()


def test_drain_timeout_ends_what_is_still_running(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(16), "--drain-timeout", "1")
    ip = daemon.deploy("held", busybox_image("held"))
    with socket.create_connection((ip, 80), timeout=5) as client:
        wait_for_handler(daemon, client)
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 5
        assert read_to_close(client, 5) == b""
    assert containers(daemon) == {} and bundles(daemon) == []
    assert "drain cut function=held connections=1" in daemon.log.read_text()


def test_second_signal_exits_at_once_and_the_next_start_cleans_up(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(15), "--drain-timeout", "60")
    ip = daemon.deploy("held", busybox_image("held"))
    with socket.create_connection((ip, 80), timeout=5) as client:
        wait_for_handler(daemon, client)
        proc = daemon.proc
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "the first signal drains"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 4, "a forced exit is no clean one"
        assert time.monotonic() - started < 1
        daemon.proc = None
        assert containers(daemon), "the forced exit left the running handler"

        daemon.start()
        assert_no_leftovers(daemon)
        assert read_to_close(client, 5) == b""
    assert http_get(ip) == (200, b"held\n")
