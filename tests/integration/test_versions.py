"""Versions with the real daemon: listing, instant rollback, a version's own address, pruning, restart, rm."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyroute2 import IPRoute

from faas_cli.client import Client, UnixEndpoint
from tests.integration.conftest import Daemon, daemon_range, eventually, first_ip, http_get
from tests.integration.faulty import busybox_variant, containers, runc


def faas_aliases() -> set[str]:
    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(label="lo:faas")}


def refuses(ip: str) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((ip, 80)) != 0


def versions(daemon: Daemon, name: str) -> dict:
    result = daemon.faas("versions", name, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def new(daemon: Daemon, name: str, image: Path, *options: str) -> None:
    result = daemon.faas("new", name, "-f", str(image), *options)
    assert result.returncode == 0, result.stderr


def test_rollback_version_addresses_pruning_restart_and_rm(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(30))
    ip = first_ip(daemon_range(30))
    for number in (1, 2, 3):
        new(daemon, "hello", busybox_image(f"v{number}"))
    assert http_get(ip) == (200, b"v3\n")

    table = daemon.faas("versions", "hello").stdout.splitlines()
    assert table[0].split()[:3] == ["VERSION", "CURRENT", "IMAGE"]
    assert [row.split()[:2] for row in table[1:]] == [["1", "hello"], ["2", "hello"], ["3", "*"]]
    listing = versions(daemon, "hello")
    assert listing["current"] == 3 and [v["version"] for v in listing["versions"]] == [1, 2, 3]
    assert len({v["digest"] for v in listing["versions"]}) == 3 and all(v["ip"] is None for v in listing["versions"])

    # Rollback is a registry update and a swap: no import. Timed through the API itself.
    client = Client(UnixEndpoint(daemon.socket))
    started = time.monotonic()
    assert client.rollback("hello")["version"] == 2
    took = time.monotonic() - started
    assert http_get(ip) == (200, b"v2\n"), "the very next connection gets the version rolled back to"
    print(f"rollback took {took * 1000:.1f} ms")
    assert took < 0.5
    result = daemon.faas("rollback", "hello")
    assert (result.returncode, result.stdout) == (0, "Rolled back hello to version 1 (hello)\n")
    assert http_get(ip) == (200, b"v1\n")
    refused = daemon.faas("rollback", "hello")
    assert refused.returncode == 1 and "'hello' has no version before 1 to roll back to" in refused.stderr
    unknown = daemon.faas("rollback", "hello", "9")
    assert unknown.returncode == 1 and "'hello' has no version 9: the versions kept are 1, 2, 3" in unknown.stderr
    assert versions(daemon, "hello")["current"] == 1, "a refused rollback changes nothing"
    forward = daemon.faas("rollback", "hello", "3")
    assert (forward.returncode, forward.stdout) == (0, "Switched hello to version 3 (hello)\n"), "forward: no rollback"

    # A version's own address serves that version, while the function's serves the current one.
    v1_ip = daemon.faas("ip", "hello", "--version", "1").stdout.strip()
    assert v1_ip not in ("", ip) and v1_ip in faas_aliases()
    assert daemon.faas("ip", "hello", "--version", "1").stdout.strip() == v1_ip, "asked again: the same address"
    assert http_get(v1_ip) == (200, b"v1\n")
    assert http_get(ip) == (200, b"v3\n")
    assert [v["ip"] for v in versions(daemon, "hello")["versions"]] == [v1_ip, None, None]
    missing = daemon.faas("ip", "hello", "--version", "7")
    assert missing.returncode == 1 and "'hello' has no version 7" in missing.stderr

    # Numbering goes on after the highest number, whatever is current.
    assert daemon.faas("rollback", "hello", "2").returncode == 0
    result = daemon.faas("new", "hello", "-f", str(busybox_image("v4")))
    assert "(version 4)" in result.stdout, result.stderr
    assert http_get(ip) == (200, b"v4\n")
    # Version 1 fell out of the three kept: its rootfs and its own address went with it.
    assert [v["version"] for v in versions(daemon, "hello")["versions"]] == [2, 3, 4]
    assert not (daemon.state_dir / "images" / "hello" / "1").exists()
    assert v1_ip not in faas_aliases() and refuses(v1_ip)

    described = daemon.faas("describe", "hello")
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert f"IP:        {ip}" in lines and "Version:   4 (kept: 2, 3, 4)" in lines
    assert "Requests:  6 (handler 6)" in lines, lines
    as_json = json.loads(daemon.faas("describe", "hello", "--json").stdout)
    assert as_json["requests"] == {"handler": 6} and as_json["current"] == 4

    # A version's address and a rollback survive a restart.
    v3_ip = daemon.faas("ip", "hello", "--version", "3").stdout.strip()
    assert v3_ip == v1_ip, "a freed address is handed out again"
    assert daemon.faas("rollback", "hello", "3").returncode == 0
    assert daemon.stop() == 0
    assert v3_ip not in faas_aliases()
    daemon.start()
    assert versions(daemon, "hello")["current"] == 3
    assert http_get(ip) == (200, b"v3\n")
    assert http_get(v3_ip) == (200, b"v3\n")
    assert daemon.faas("ip", "hello", "--version", "3").stdout.strip() == v3_ip
    v4_ip = daemon.faas("ip", "hello", "--version", "4").stdout.strip()
    assert http_get(v4_ip) == (200, b"v4\n")

    # rm gives back every address: the function's and its versions'.
    assert daemon.faas("rm", "hello").returncode == 0
    assert not {ip, v3_ip, v4_ip} & faas_aliases()
    assert all(refuses(address) for address in (ip, v3_ip, v4_ip))
    assert not (daemon.state_dir / "images" / "hello").exists()
    assert daemon.faas("versions", "hello").returncode == 1


def test_keep_versions_prunes_a_versions_address_but_not_its_running_connection(
    make_daemon, busybox_image, tmp_path: Path
) -> None:
    """With --keep-versions 1, each deploy prunes the one before; a connection on its own address runs on."""
    daemon = make_daemon(daemon_range(31), "--keep-versions", "1")
    # The handler reads its image only when told to (a file the test puts in its /tmp).
    script = 'while [ ! -e /tmp/go ]; do sleep 0.05; done; exec hello "still version one"'
    # Without warm containers, the one container is the held connection's.
    new(daemon, "held", busybox_variant(busybox_image(), tmp_path / "v1.tar", ["/bin/sh", "-c", script]), "--warm", "0")
    pinned_ip = daemon.faas("ip", "held", "--version", "1").stdout.strip()
    first_rootfs = daemon.state_dir / "images" / "held" / "1"
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(http_get, pinned_ip)
        assert eventually(lambda: len(containers(daemon)) == 1)
        (container_id,) = containers(daemon)
        new(daemon, "held", busybox_image("version two"))
        assert [v["version"] for v in versions(daemon, "held")["versions"]] == [2]
        assert pinned_ip not in faas_aliases() and refuses(pinned_ip), "the pruned version's address is gone"
        assert first_rootfs.exists(), "but its rootfs stays while a connection runs on it"
        touched = runc(daemon, "exec", container_id, "/bin/touch", "/tmp/go")
        assert touched.returncode == 0, touched.stderr
        assert answer.result() == (200, b"still version one\n")
    assert eventually(lambda: not first_rootfs.exists()), "and goes when that connection ends"
    assert http_get(first_ip(daemon_range(31))) == (200, b"version two\n")


def test_the_current_image_again_is_no_new_version_unless_forced(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(70))
    ip = first_ip(daemon_range(70))
    for number in (1, 2):
        new(daemon, "hello", busybox_image(f"v{number}"))
    again = daemon.faas("new", "hello", "-f", str(busybox_image("v2")))
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        f"hello: same image as version 2, which stays current at {ip} (nothing deployed; --force adds a version)\n"
    )
    listing = versions(daemon, "hello")
    assert (listing["current"], [v["version"] for v in listing["versions"]]) == (2, [1, 2]), "version 1 still kept"
    assert sorted(p.name for p in (daemon.state_dir / "images" / "hello").iterdir()) == ["1", "2"]
    assert http_get(ip) == (200, b"v2\n")

    other_limits = daemon.faas("new", "hello", "-f", str(busybox_image("v2")), "--memory", "64m")
    assert other_limits.returncode == 0 and "Deployed hello" in other_limits.stdout, "new limits: a new version"
    forced = daemon.faas("new", "hello", "-f", str(busybox_image("v2")), "--memory", "64m", "--force")
    assert forced.returncode == 0 and "(version 4)" in forced.stdout
    assert versions(daemon, "hello")["current"] == 4
