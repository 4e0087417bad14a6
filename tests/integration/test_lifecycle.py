"""A user's whole path: new -> curl -> list -> ip -> redeploy -> rm, with the real daemon and runc."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

from tests.integration.conftest import Daemon, daemon_range, first_ip, http_get


def test_new_serve_list_ip_redeploy_rm(daemon: Daemon, busybox_image) -> None:
    address = first_ip(daemon_range(0))
    result = daemon.faas("new", "hello", "-f", str(busybox_image("version one")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Deployed hello at {address} (version 1)"

    ip = daemon.faas("ip", "hello").stdout
    assert ip == f"{address}\n"
    assert http_get(address) == (200, b"version one\n")

    table = daemon.faas("list").stdout.splitlines()
    assert table[0].split() == ["NAME", "IP", "VERSION", "CMD"]
    assert table[1].split() == ["hello", address, "1", "/bin/hello", "version", "one"]
    listed = json.loads(daemon.faas("list", "--json").stdout)
    assert [(f["name"], f["ip"], f["version"]) for f in listed] == [("hello", address, 1)]

    result = daemon.faas("new", "hello", "-f", str(busybox_image("version two")))
    assert result.returncode == 0, result.stderr
    assert f"{address} (version 2)" in result.stdout
    assert http_get(address) == (200, b"version two\n")

    assert daemon.faas("rm", "hello").returncode == 0
    assert not (daemon.state_dir / "images" / "hello").exists()
    assert daemon.faas("list", "--json").stdout.strip() == "[]"
    with socket.socket() as probe:
        assert probe.connect_ex((address, 80)) != 0
    assert address not in Path("/proc/net/fib_trie").read_text()


def test_functions_get_distinct_addresses_and_stdin_upload(daemon: Daemon, busybox_image) -> None:
    first = daemon.deploy("one", busybox_image("one"))
    result = daemon.faas("new", "two", input=busybox_image("two").read_bytes())
    assert result.returncode == 0, result.stderr
    second = daemon.faas("ip", "two").stdout.strip()
    assert first != second
    assert http_get(first)[1] == b"one\n"
    assert http_get(second)[1] == b"two\n"


def test_python_example_handler_keeps_the_connection_alive(daemon: Daemon, python_image: Path) -> None:
    import http.client

    ip = daemon.deploy("pyhello", python_image)
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    for _ in range(2):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"Hello from faasd\n"
    conn.close()
    listed = json.loads(daemon.faas("list", "--json").stdout)
    assert listed[0]["cmd"] == ["python3", "/app/app.py"]


def test_errors_speak_to_the_user_and_change_nothing(daemon: Daemon, busybox_image) -> None:
    bad_name = daemon.faas("new", "Bad_Name", "-f", str(busybox_image()))
    assert bad_name.returncode == 1
    assert "invalid function name 'Bad_Name'" in bad_name.stderr

    missing = daemon.faas("ip", "nothing")
    assert missing.returncode == 1
    assert "no function named 'nothing'" in missing.stderr

    garbage = daemon.faas("new", "garbage", input=b"this is not a tarball" * 100)
    assert garbage.returncode == 1
    assert garbage.stderr.startswith("faas: ")
    assert daemon.faas("list", "--json").stdout.strip() == "[]"
    assert list((daemon.state_dir / "images").iterdir()) == []
    assert list((daemon.state_dir / "uploads").iterdir()) == []


def test_oci_archive_deploys_like_docker_save(daemon: Daemon, tmp_path: Path) -> None:
    from tools.build_image import build_busybox_image

    image = tmp_path / "oci.tar"
    build_busybox_image(image, body="from an OCI layout", oci=True)
    ip = daemon.deploy("oci", image)
    assert http_get(ip) == (200, b"from an OCI layout\n")


def test_several_images_in_one_archive_need_a_tag(daemon: Daemon, tmp_path: Path, busybox_image) -> None:
    import tarfile

    combined = tmp_path / "two-images.tar"
    manifests, members = [], {}
    for body, tag in (("first", "first:1"), ("second", "second:1")):
        with tarfile.open(busybox_image(body)) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name not in ("manifest.json", "repositories"):
                    members[member.name] = archive.extractfile(member).read()
            (entry,) = json.load(archive.extractfile("manifest.json"))
            manifests.append({**entry, "RepoTags": [tag]})
    members["manifest.json"] = json.dumps(manifests).encode()
    with tarfile.open(combined, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    untagged = daemon.faas("new", "pick", "-f", str(combined))
    assert untagged.returncode == 1
    assert "holds 2 images (first:1, second:1); choose one with --tag" in untagged.stderr
    ip = daemon.deploy("pick", combined, "--tag", "second:1")
    assert http_get(ip) == (200, b"second\n")


def test_a_function_deployed_again_after_rm_starts_its_counts_from_zero(daemon: Daemon, busybox_image) -> None:
    address = daemon.deploy("counted", busybox_image("counted"))
    for _ in range(3):
        assert http_get(address) == (200, b"counted\n")
    assert json.loads(daemon.faas("describe", "counted", "--json").stdout)["requests"] == {"handler": 3}
    assert daemon.faas("rm", "counted").returncode == 0
    assert 'function="counted"' not in daemon.faas("stats", "--raw").stdout
    address = daemon.deploy("counted", busybox_image("counted"))
    assert json.loads(daemon.faas("describe", "counted", "--json").stdout)["requests"] == {}
    assert http_get(address) == (200, b"counted\n")
    assert json.loads(daemon.faas("describe", "counted", "--json").stdout)["requests"] == {"handler": 1}
