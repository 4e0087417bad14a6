"""The daemon as an operator meets it: restarts, refusals, the wire API, many clients, failures."""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyroute2 import IPRoute

from tests.integration.conftest import BIN, Daemon, daemon_range, eventually, first_ip, http_get
from tests.integration.faulty import containers
from tests.integration.test_loop import PATIENCE_SECONDS, healthz_seconds
from tools.build_image import write_docker_archive


def faas_aliases() -> set[str]:
    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(label="lo:faas")}


def test_restart_restores_addresses_and_listeners(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(1))
    ip = daemon.deploy("survivor", busybox_image("still here"))
    assert ip in faas_aliases()

    assert daemon.stop() == 0
    assert ip not in faas_aliases(), "a clean shutdown removes the aliases"

    daemon.start()
    assert ip in faas_aliases()
    assert http_get(ip) == (200, b"still here\n")
    assert daemon.faas("ip", "survivor").stdout.strip() == ip


def test_second_daemon_on_the_same_state_dir_is_refused(daemon: Daemon) -> None:
    result = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert f"another faasd (pid {daemon.proc.pid}) is using {daemon.state_dir}" in result.stderr


def test_missing_runc_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "faasd"),
            "--state-dir",
            str(tmp_path / "s"),
            "--run-dir",
            str(tmp_path / "r"),
            "--runc",
            "/nonexistent/runc",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "runc not found" in result.stderr and "apt-get install runc" in result.stderr
    assert not (tmp_path / "s").exists()


def test_fifty_concurrent_connections_are_all_answered(daemon: Daemon, busybox_image) -> None:
    ip = daemon.deploy("busy", busybox_image("busy"))
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: http_get(ip, timeout=60), range(50)))
    assert answers == [(200, b"busy\n")] * 50
    # Clients are answered before runc reports the exit; the bundles go right after.
    bundles = daemon.root / "run" / "bundles"
    assert eventually(lambda: not any(bundles.iterdir())), list(bundles.iterdir())


def test_container_that_cannot_start_gets_the_client_a_502(daemon: Daemon, tmp_path: Path, busybox_image) -> None:
    image = tmp_path / "broken.tar"
    layer = tmp_path / "layer.tar"
    with tarfile.open(busybox_image(), "r") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        config = json.load(archive.extractfile(manifest[0]["Config"]))
        layer.write_bytes(archive.extractfile(manifest[0]["Layers"][0]).read())
    config["config"]["Cmd"] = ["/bin/does-not-exist"]
    write_docker_archive(image, [layer], config, "broken:latest")
    ip = daemon.deploy("broken", image)
    status, body = http_get(ip)
    assert status == 502
    assert "exited before taking the connection" in json.loads(body)["error"]


def test_hostile_archive_is_refused_and_leaves_nothing(daemon: Daemon, tmp_path: Path) -> None:
    layer = tmp_path / "evil.tar"
    with tarfile.open(layer, "w") as tar:
        entry = tarfile.TarInfo("../../../../tmp/faasd-escaped")
        entry.size = 4
        tar.addfile(entry, io.BytesIO(b"evil"))
    image = tmp_path / "evil-image.tar"
    write_docker_archive(image, [layer], {"config": {"Cmd": ["/x"]}, "rootfs": {"type": "layers"}}, "evil:1")

    result = daemon.faas("new", "evil", "-f", str(image))
    assert result.returncode == 1
    assert "climbs out" in result.stderr
    assert not Path("/tmp/faasd-escaped").exists()
    assert daemon.faas("list", "--json").stdout.strip() == "[]"
    assert list((daemon.state_dir / "images").iterdir()) == []


def test_original_wire_api(daemon: Daemon, busybox_image) -> None:
    def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        conn = http.client.HTTPConnection("localhost")
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(str(daemon.socket))
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()

    status, body = request("POST", "/api/new", busybox_image("wire").read_bytes(), {"X-Image-Name": "wire"})
    assert (status, body) == (201, f"{first_ip(daemon_range(0))}\n".encode())
    assert request("GET", "/api/ip/wire") == (200, f"{first_ip(daemon_range(0))}\n".encode())
    status, body = request("GET", "/api/list")
    assert json.loads(body) == [{"name": "wire", "ip": first_ip(daemon_range(0))}]
    assert request("GET", "/healthz")[0] == 200
    status, body = request("POST", "/api/new", b"x")
    assert status == 400 and "X-Image-Name" in json.loads(body)["error"]


def test_a_function_that_cannot_listen_does_not_keep_the_others_down(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(3))
    blocked_ip = daemon.deploy("blocked", busybox_image("blocked"))
    free_ip = daemon.deploy("free", busybox_image("free"))
    assert daemon.stop() == 0
    with socket.socket() as squatter:
        squatter.bind((blocked_ip, 80))
        squatter.listen()
        daemon.start()
        assert http_get(free_ip) == (200, b"free\n")
    assert "cannot restore function=blocked" in daemon.log.read_text()


def test_a_redeploy_that_cannot_be_served_leaves_the_registry_on_the_version_served(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(44))
    ip = daemon.deploy("squatted", busybox_image("one"))
    assert daemon.stop() == 0
    with socket.socket() as squatter:
        squatter.bind((ip, 80))
        squatter.listen()
        daemon.start()  # the function is registered but cannot listen
        result = daemon.faas("new", "squatted", "-f", str(busybox_image("two")))
        assert result.returncode != 0 and "cannot listen" in result.stderr
        versions = json.loads(daemon.faas("versions", "squatted", "--json").stdout)
        assert [v["version"] for v in versions["versions"]] == [1] and versions["current"] == 1
        assert not (daemon.state_dir / "images" / "squatted" / "2").exists()
    assert daemon.stop() == 0
    daemon.start()
    assert http_get(ip) == (200, b"one\n"), "the version the registry keeps is the one served"


def refused(ip: str) -> bool:
    try:
        socket.create_connection((ip, 80), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_on_sigterm_listeners_stop_first_the_api_answers_through_the_drain_and_a_second_signal_exits_non_zero(
    make_daemon, probe_image: Path
) -> None:
    daemon = make_daemon(daemon_range(43), "--drain-timeout", "60")
    ip = daemon.deploy("busy", probe_image, "--timeout", "60")
    with socket.create_connection((ip, 80)) as in_flight:
        in_flight.sendall(b"GET /spin HTTP/1.1\r\nHost: busy\r\n\r\n")
        assert eventually(lambda: bool(containers(daemon)))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        assert eventually(lambda: refused(ip)), "the function's listener stops accepting at once"
        assert healthz_seconds(daemon) < PATIENCE_SECONDS, "the API still answers while connections drain"
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 4, "a second signal cuts the drain, and says so"
    daemon.proc = None
    daemon.start()  # its start-up removes what the forced exit left running: a handler spinning for 60 s
