"""docs/scale.md's recipe, run: a registry, two faasd nodes applying one stack file, HAProxy in front.

The registry is Debian's docker-registry with htpasswd auth, the image is pushed with skopeo,
each node is a faasd of its own (state dir, address range, gateway port) that pulls what
docs/scale/stack.yml declares, and HAProxy runs docs/scale/haproxy.cfg as it is. One node is
killed while requests flow through HAProxy: those that fail during the switch are counted and
printed; the node, restarted, serves again with its functions as they were.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon, daemon_range, eventually
from tests.integration.faulty import busybox_variant
from tests.integration.test_pull import login
from tools.local_registry import LocalRegistry, free_port

RECIPE = Path(__file__).parents[2] / "docs" / "scale"
DOMAIN = "localhost"


@dataclass
class Traffic:
    """Requests sent one after another through HAProxy, each on a new connection."""

    address: tuple[str, int]
    outcomes: list[tuple[float, int | str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            conn = http.client.HTTPConnection(*self.address, timeout=10)
            try:
                conn.request("GET", "/", headers={"Host": f"hello.{DOMAIN}"})
                response = conn.getresponse()
                body = response.read()
                outcome: int | str = response.status if body.strip() == b"hello from a node" else repr(body)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            finally:
                conn.close()
            self.outcomes.append((time.monotonic(), outcome))
            time.sleep(0.01)

    def failures(self, since: float = 0.0) -> list[tuple[float, int | str]]:
        return [(at, outcome) for at, outcome in self.outcomes if at >= since and outcome != 200]


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[str, int]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(environ: dict[str, str]) -> tuple[str, int]:
        port = free_port()
        log = open(tmp_path / "haproxy.log", "wb")  # noqa: SIM115  # closed with the process
        procs.append(
            subprocess.Popen(
                ["haproxy", "-db", "-f", str(RECIPE / "haproxy.cfg")],
                env={**os.environ, **environ, "LISTEN": f"127.0.0.1:{port}"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        return "127.0.0.1", port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def test_two_nodes_behind_haproxy_keep_serving_when_one_dies(
    make_daemon: Callable[..., Daemon],
    registry: LocalRegistry,
    busybox_image: Callable[..., Path],
    haproxy: Callable[[dict[str, str]], tuple[str, int]],
    tmp_path: Path,
) -> None:
    image = busybox_variant(
        busybox_image("base"), tmp_path / "hello.tar", ["/bin/sh", "-c", 'exec /bin/hello "$GREETING"']
    )
    registry.push_archive(image, "team/hello", "1", "oci-archive")
    gateways = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    nodes = [
        make_daemon(daemon_range(n), "--gateway", gateway, "--insecure-registry", registry.host)
        for n, gateway in enumerate(gateways)
    ]
    environ = {"REGISTRY": registry.host}
    for node in nodes:
        login(node, registry.host)
        applied = node.faas("apply", "-f", str(RECIPE / "stack.yml"), env=environ)
        assert applied.returncode == 0 and applied.stdout.startswith("hello: created (version 1"), applied.stderr
        again = node.faas("apply", "-f", str(RECIPE / "stack.yml"), env=environ)
        assert again.stdout == "hello: unchanged (version 1)\n", again.stdout + again.stderr

    address = haproxy({"NODE_A": gateways[0], "NODE_B": gateways[1], "DOMAIN": DOMAIN, "CHECK": "hello"})
    traffic = Traffic(address)
    sender = threading.Thread(target=traffic.run)
    sender.start()
    try:
        assert eventually(lambda: len(traffic.outcomes) >= 20 and not traffic.failures(time.monotonic() - 1), 30)
        killed_at = time.monotonic()
        nodes[0].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        nodes[0].proc.wait(timeout=20)  # type: ignore[union-attr]
        nodes[0].proc = None
        time.sleep(3)  # six health-check intervals
        switch = traffic.failures(killed_at)
        served_alone = len([at for at, _ in traffic.outcomes if at >= killed_at])
        print(f"\nfailover: {len(switch)} failed of {served_alone} requests after one node was killed: {switch}")
        assert not traffic.failures(killed_at + 2.0), "requests kept failing past four health-check intervals"

        nodes[0].start()
        assert [f["name"] for f in json.loads(nodes[0].faas("list", "--json").stdout)] == ["hello"]
        assert eventually(lambda: served_by(nodes[0]) > 0, 30), "the restarted node got no requests from HAProxy"
    finally:
        traffic.stop.set()
        sender.join()
    assert traffic.outcomes[-1][1] == 200


def served_by(node: Daemon) -> int:
    """Requests function hello answered on ``node`` since it started."""
    stats = json.loads(node.faas("stats", "--json").stdout)
    return int(stats["functions"].get("hello", {}).get("requests", {}).get("handler", 0))
