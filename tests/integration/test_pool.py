"""Warm pools and reuse, on the real daemon: a connection never gets a container another used.

Every answer of the probe's ``/visit`` carries a token made when its container's handler
started, the request id the daemon sent, and how many connections that container has served.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Daemon, daemon_range, eventually, http_get
from tests.integration.faulty import bundles, containers, runc


def visit(ip: str) -> dict[str, Any]:
    status, body = http_get(ip, "/visit")
    assert status == 200, body
    return json.loads(body)


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    """One sample from the daemon's /metrics page (0 when the series does not exist yet)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.compile(rf"^{name}(?:\{{{re.escape(wanted)}\}})? (\S+)$", re.MULTILINE)
    match = pattern.search(daemon.faas("stats", "--raw").stdout)
    return float(match[1]) if match else 0.0


def ready_versions(daemon: Daemon) -> list[str]:
    """The version directory each bundle's rootfs is in: which version the containers run."""
    versions = []
    for bundle in bundles(daemon):
        try:
            config = json.loads((bundle / "config.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # a bundle made or removed while listed
            continue
        versions.append(config["root"]["path"].split("/")[-2])
    return sorted(versions)


@pytest.fixture
def pooled(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon(daemon_range(33), "--warm-idle", "3")


def test_a_warm_container_serves_the_next_connection_and_never_a_second(pooled: Daemon, probe_image: Path) -> None:
    ip = pooled.deploy("warmed", probe_image)
    first = visit(ip)
    answers = []
    for _ in range(6):
        assert eventually(lambda: metric(pooled, "faasd_warm_containers") >= 1), "one is started after an arrival"
        answers.append(visit(ip))
    assert len({a["boot"] for a in [first, *answers]}) == 7, "each connection had a container of its own"
    assert all(a["visits"] == 1 and not a["more"] for a in answers)
    assert len({a["id"] for a in [first, *answers]}) == 7
    assert metric(pooled, "faasd_connection_containers_total", function="warmed", path="warm") == 6
    # Its log lines, its start included, carry the id of the request the container served.
    logs = pooled.faas("logs", "warmed").stdout
    assert all(f" {a['id']} " in logs for a in answers)


def test_an_idle_pool_empties_and_the_next_connection_takes_the_cold_path(pooled: Daemon, probe_image: Path) -> None:
    ip = pooled.deploy("idler", probe_image)
    visit(ip)
    assert eventually(lambda: len(containers(pooled)) >= 1)
    assert eventually(lambda: not containers(pooled) and not bundles(pooled), 10), "emptied after --warm-idle"
    assert metric(pooled, "faasd_warm_containers") == 0
    cold = metric(pooled, "faasd_connection_containers_total", function="idler", path="cold")
    visit(ip)
    assert metric(pooled, "faasd_connection_containers_total", function="idler", path="cold") == cold + 1


def test_warm_0_leaves_nothing_started_between_connections(pooled: Daemon, probe_image: Path) -> None:
    ip = pooled.deploy("coldest", probe_image, "--warm", "0")
    for _ in range(3):
        visit(ip)
        assert eventually(lambda: not containers(pooled) and not bundles(pooled))
        assert metric(pooled, "faasd_warm_containers") == 0
    assert metric(pooled, "faasd_connection_containers_total", function="coldest", path="warm") == 0


def test_redeploy_and_rm_stop_the_warm_containers(pooled: Daemon, probe_image: Path, busybox_image) -> None:
    ip = pooled.deploy("cycled", probe_image)
    visit(ip)
    assert eventually(lambda: ready_versions(pooled) == ["1"] * len(bundles(pooled)) and bundles(pooled))
    pooled.deploy("cycled", busybox_image("version two"))
    assert eventually(lambda: "1" not in ready_versions(pooled)), "version 1's warm containers went"
    assert http_get(ip) == (200, b"version two\n")
    assert eventually(lambda: bool(containers(pooled)))
    assert pooled.faas("rm", "cycled").returncode == 0
    assert eventually(lambda: not containers(pooled) and not bundles(pooled), 5)


def test_a_warm_container_that_dies_while_waiting_is_reaped(pooled: Daemon, probe_image: Path) -> None:
    ip = pooled.deploy("fragile", probe_image, "--warm", "1")
    visit(ip)
    # Ready, not only listed: a container killed while it starts is a failed start, not a death in the pool.
    assert eventually(lambda: metric(pooled, "faasd_warm_containers") == 1 and len(containers(pooled)) == 1)
    (victim,) = containers(pooled)
    assert runc(pooled, "kill", victim, "KILL").returncode == 0
    assert eventually(lambda: victim not in containers(pooled) and len(bundles(pooled)) <= 1)
    assert eventually(lambda: "warm container died" in pooled.log.read_text()), "the pool noticed, in its own time"
    assert visit(ip)["visits"] == 1, "the next connection is served all the same"


def test_warm_containers_hold_slots_and_give_them_up_to_a_waiting_connection(
    make_daemon: Callable[..., Daemon], probe_image: Path
) -> None:
    daemon = make_daemon(daemon_range(34), "--max-containers", "2", "--warm-idle", "30")
    first = daemon.deploy("first", probe_image)
    second = daemon.deploy("second", probe_image)
    visit(first)
    assert eventually(lambda: metric(daemon, "faasd_warm_containers") >= 1)
    assert metric(daemon, "faasd_containers_running") <= 2, "warm containers count against --max-containers"
    with ThreadPoolExecutor(2) as pool:  # two at once: every slot is needed, a warm one's too
        answers = list(pool.map(lambda ip: visit(ip), [second, second]))
    assert [a["visits"] for a in answers] == [1, 1]
    assert metric(daemon, "faasd_requests_total", function="second", status="503") == 0


def test_a_connection_waiting_for_a_slot_takes_the_container_that_comes_back(
    make_daemon: Callable[..., Daemon], probe_image: Path
) -> None:
    daemon = make_daemon(daemon_range(34), "--max-containers", "1")
    ip = daemon.deploy("one-slot", probe_image, "--reuse", "5", "--warm", "0")
    first = http.client.HTTPConnection(ip, 80, timeout=30)
    first.connect()
    try:
        # The first connection holds the only slot, its handler waiting for the request...
        assert eventually(lambda: metric(daemon, "faasd_containers_running") == 1)
        with ThreadPoolExecutor(1) as pool:
            second = pool.submit(visit, ip)
            assert eventually(lambda: metric(daemon, "faasd_queue_depth") == 1)
            # ...and once it is answered, its container comes back and goes to the one that waits.
            first.request("GET", "/visit", headers={"Connection": "close"})
            answer = json.loads(first.getresponse().read())
            waited = second.result(timeout=30)
    finally:
        first.close()
    assert (answer["visits"], waited["visits"]) == (1, 2) and waited["boot"] == answer["boot"]
    assert metric(daemon, "faasd_connection_containers_total", function="one-slot", path="cold") == 1


def test_reuse_serves_n_connections_per_container_then_starts_afresh(pooled: Daemon, probe_image: Path) -> None:
    ip = pooled.deploy("reused", probe_image, "--reuse", "3", "--warm", "0")
    answers = []
    for _ in range(4):
        answers.append(visit(ip))
        # The handler comes back to /control.sock once its client has closed: wait for that.
        assert eventually(lambda: metric(pooled, "faasd_warm_containers") == (answers[-1]["visits"] < 3))
    assert [a["visits"] for a in answers] == [1, 2, 3, 1]
    assert len({a["boot"] for a in answers[:3]}) == 1 and answers[3]["boot"] != answers[0]["boot"]
    assert [a["more"] for a in answers[:3]] == [True, True, False], "the last one is told not to come back"
    assert len({a["id"] for a in answers}) == 4, "each connection has its own request id"
