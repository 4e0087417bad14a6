"""The layer store under the real daemon: functions on one base share its layer, removals free
what no version lists, a restart mounts every rootfs again, and whiteouts hold in what runs."""

from __future__ import annotations

import json
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.images.overlay import mounts_below
from tests.integration.conftest import Daemon, daemon_range, eventually, http_get
from tests.unit.images.layers import Entry, layer_bytes
from tools.build_image import DEFAULT_PATH, write_docker_archive

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
