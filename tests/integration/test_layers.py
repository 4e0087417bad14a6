"""The layer store under the real daemon: functions on one base share its layer, removals free
what no version lists, a restart mounts every rootfs again, whiteouts hold in what runs, and an
upload leaves out (or faasd does not write) the layers faasd holds."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from faas_cli.client import Client, UnixEndpoint, UnixHTTPConnection
from faas_cli.upload import file_upload
from faasd.images.overlay import mounts_below
from tests.integration.conftest import Daemon, daemon_range, eventually, http_get
from tests.unit.images.layers import Entry, layer_bytes, write_blobs_first_archive
from tools.build_image import DEFAULT_PATH, write_docker_archive, write_oci_archive

# The handler answers with the function's name and what /etc holds, as its container sees it.
REPORT = 'exec /bin/hello "$(cat /app/name) etc:$(ls /etc | tr "\\n" " ")"'


@pytest.fixture(scope="module")
def base_layer(busybox_image: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox image's one layer (bin, etc/passwd, etc/group, ...), as a layer tar."""
    with tarfile.open(busybox_image("base")) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        data = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    path = tmp_path_factory.mktemp("layers") / "base.tar"
    path.write_bytes(data)
    return path


def app_image(base: Path, name: str, entries: list[Entry] = []) -> Path:  # noqa: B006  # never mutated
    """``base`` and a layer of the function's own: /app/name, and ``entries``."""
    layer = base.parent / f"{name}.layer.tar"
    layer.write_bytes(layer_bytes([("app", "dir", ""), ("app/name", "file", name), *entries]))
    out = base.parent / f"{name}.tar"
    config = {"config": {"Cmd": ["/bin/sh", "-c", REPORT], "Env": [DEFAULT_PATH]}}
    write_docker_archive(out, [base, layer], config, f"{name}:1")
    return out


def layer_count(daemon: Daemon) -> int:
    return len(list((daemon.state_dir / "layers" / "sha256").iterdir()))


def test_functions_on_one_base_share_it_and_removals_free_what_is_unused(
    make_daemon: Callable[..., Daemon], base_layer: Path
) -> None:
    daemon = make_daemon(daemon_range(30))
    first = daemon.deploy("first", app_image(base_layer, "first"))
    assert layer_count(daemon) == 2
    second = daemon.deploy("second", app_image(base_layer, "second", [("etc/.wh.group", "file", "")]))
    assert layer_count(daemon) == 3, "the second function brought only its own layer"
    assert "image imported function=second version=1 layers=2 unpacked=1 reused=1" in daemon.log.read_text()

    status, body = http_get(first)
    assert (status, body.split(b" etc:")[0]) == (200, b"first")
    assert b"group" in body and b"passwd" in body
    status, body = http_get(second)
    assert (status, body.split(b" etc:")[0]) == (200, b"second")
    assert b"group" not in body and b"passwd" in body, "the upper layer's whiteout hides the base's file"

    assert daemon.faas("rm", "first").returncode == 0
    assert layer_count(daemon) == 2, "the base stays for the second function"
    assert http_get(second)[0] == 200
    assert daemon.faas("rm", "second").returncode == 0
    assert layer_count(daemon) == 0
    assert mounts_below(daemon.state_dir) == []


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGKILL"])
def test_a_restart_mounts_every_version_again(
    make_daemon: Callable[..., Daemon], base_layer: Path, signum: str
) -> None:
    daemon = make_daemon(daemon_range(31))
    ip = daemon.deploy("app", app_image(base_layer, "app"))
    daemon.deploy("app", app_image(base_layer, "app", [("etc/motd", "file", "v2")]))
    daemon.stop(signal.Signals[signum])
    if signum == "SIGTERM":
        assert mounts_below(daemon.state_dir) == [], "a clean stop leaves plain files"
    daemon.start()
    assert len(mounts_below(daemon.state_dir)) == 2, "both versions, the older one kept for rollback too"
    assert eventually(lambda: http_get(ip)[0] == 200)
    assert b"motd" in http_get(ip)[1]


def uploads(daemon: Daemon, function: str) -> list[dict[str, int]]:
    """What the daemon logged of each upload to ``function``: bytes received, written, layers left out."""
    pattern = rf"upload received function={function} (.*)"
    found = [re.search(pattern, line) for line in daemon.log.read_text().splitlines()]
    return [{k: int(v) for k, v in (f.split("=") for f in m[1].split())} for m in found if m]


def image_in(layout: str, base: Path, name: str) -> Path:
    """``app_image``'s image, written in ``layout``: docker save before Docker 25, OCI (gzip
    layers, metadata first, as tools/build_image.py and podman write it), or Docker >= 25's."""
    if layout == "legacy":
        return app_image(base, name)
    layer = base.parent / f"{name}.layer.tar"
    layer.write_bytes(layer_bytes([("app", "dir", ""), ("app/name", "file", name)]))
    out = base.parent / f"{name}.{layout}.tar"
    config = {"config": {"Cmd": ["/bin/sh", "-c", REPORT], "Env": [DEFAULT_PATH]}}
    writer = write_oci_archive if layout == "oci" else write_blobs_first_archive
    writer(out, [base, layer], config, f"{name}:1")
    return out


@pytest.mark.parametrize("layout", ["legacy", "oci", "blobs-first"])
def test_a_second_image_on_a_known_base_sends_only_its_own_layer(
    make_daemon: Callable[..., Daemon], base_layer: Path, layout: str
) -> None:
    daemon = make_daemon(daemon_range(32 + ["legacy", "oci", "blobs-first"].index(layout)))
    daemon.deploy("first", image_in(layout, base_layer, "first"))
    [first] = uploads(daemon, "first")
    base_size = first["bytes"]  # the base is nearly all of it
    assert first["layers_left_out"] == first["layers_skipped"] == 0 and first["written"] == base_size

    from_file = image_in(layout, base_layer, "second")
    ip = daemon.deploy("second", from_file)
    [upload] = uploads(daemon, "second")
    assert upload["bytes"] < base_size / 10 and upload["layers_left_out"] == 1, upload
    assert (upload["written"], upload["layers_skipped"]) == (upload["bytes"], 0)
    status, body = http_get(ip)
    assert (status, body.split(b" etc:")[0]) == (200, b"second")
    assert b"passwd" in body, "the base's files come from the stored layer"

    piped = daemon.faas("new", "third", input=image_in(layout, base_layer, "third").read_bytes())
    assert piped.returncode == 0, piped.stderr
    [upload] = uploads(daemon, "third")
    # The legacy <id>/layer.tar too, which comes before manifest.json: faas hashes it before sending it.
    assert upload["bytes"] < base_size / 10 and upload["layers_left_out"] == 1, upload
    assert http_get(daemon.faas("ip", "third").stdout.strip())[1].startswith(b"third etc:")
    assert list((daemon.state_dir / "uploads").iterdir()) == []


def test_an_upload_that_sends_every_layer_is_not_written_whole(
    make_daemon: Callable[..., Daemon], base_layer: Path
) -> None:
    """An older faas, or curl, sends the whole archive: the layers faasd holds are not written."""
    daemon = make_daemon(daemon_range(35))
    daemon.deploy("first", image_in("blobs-first", base_layer, "first"))
    image = image_in("blobs-first", base_layer, "second").read_bytes()
    conn = UnixHTTPConnection(daemon.socket)
    conn.request("POST", "/v1/functions/second", body=image)
    response = conn.getresponse()
    assert response.status == 201, response.read()
    [upload] = uploads(daemon, "second")
    assert upload["bytes"] == len(image) and upload["layers_skipped"] == 1, upload
    assert upload["written"] < base_layer.stat().st_size / 10, upload
    assert http_get(json.loads(response.read())["ip"])[1].startswith(b"second etc:")


def test_a_layer_left_out_but_freed_before_the_import_is_refused_and_leaves_nothing(
    make_daemon: Callable[..., Daemon], base_layer: Path
) -> None:
    daemon = make_daemon(daemon_range(36))
    daemon.deploy("first", image_in("blobs-first", base_layer, "first"))
    image = image_in("blobs-first", base_layer, "second")
    base_diff_id = "sha256:" + hashlib.sha256(base_layer.read_bytes()).hexdigest()
    client = Client(UnixEndpoint(daemon.socket))
    assert client.held_layers([base_diff_id]) == {base_diff_id}
    with open(image, "rb") as file:
        upload = file_upload(file, client)  # asks now: faasd holds the base
        assert daemon.faas("rm", "first").returncode == 0  # and frees it before the upload
        result = daemon.faas("new", "second", "-f", "-", input=b"".join(upload.blocks))
    assert result.returncode == 1
    assert "faasd no longer holds it" in result.stderr and "deploy again" in result.stderr
    assert layer_count(daemon) == 0 and list((daemon.state_dir / "uploads").iterdir()) == []
    assert "second" not in daemon.faas("list").stdout
    assert daemon.faas("new", "second", "-f", str(image)).returncode == 0, "deploying again sends it"


def test_an_image_of_no_layers_deploys(make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """Its rootfs is the version's own layer alone (mount points, the control socket), over an empty one."""
    daemon = make_daemon(daemon_range(37))
    image = tmp_path / "bare.tar"
    write_docker_archive(image, [], {"config": {"Cmd": ["/bin/hello"]}}, "bare:1")
    ip = daemon.deploy("bare", image)
    rootfs = daemon.state_dir / "images" / "bare" / "1" / "rootfs"
    assert rootfs in mounts_below(rootfs) and {"proc", "tmp", "control.sock"} <= {p.name for p in rootfs.iterdir()}
    assert http_get(ip)[0] == 502, "there is nothing to run, and the client hears so"
    assert daemon.faas("rm", "bare").returncode == 0
    assert mounts_below(daemon.state_dir) == []
