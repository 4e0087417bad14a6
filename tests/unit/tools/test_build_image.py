"""The offline image builder writes archives that match what docker save and podman write."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tools.build_image import build_busybox_image

pytestmark = pytest.mark.skipif(
    not Path("/bin/busybox").exists() or shutil.which("gcc") is None, reason="needs busybox-static and gcc"
)


def test_busybox_image_is_a_docker_save_archive(tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    build_busybox_image(out, body="hi")
    with tarfile.open(out) as tar:
        (manifest,) = json.load(tar.extractfile("manifest.json"))
        config_bytes = tar.extractfile(manifest["Config"]).read()
        config = json.loads(config_bytes)
        layer = tar.extractfile(manifest["Layers"][0]).read()
        assert manifest["RepoTags"] == ["busybox-hello:latest"]
        assert manifest["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
        assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
        assert config["config"]["Cmd"] == ["/bin/hello", "hi"]
        assert "repositories" in tar.getnames()


def test_oci_variant_has_index_and_verified_blobs(tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    build_busybox_image(out, oci=True)
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "busybox-hello:latest"
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member).read()
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]
