"""Reading image tarballs in every layout users' tools write, and refusing broken ones."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path
from typing import Any

import pytest

from faasd.errors import InvalidImage
from faasd.images.archive import ImageArchive, ImageConfig
from tests.unit.images.layers import layer_bytes
from tools.build_image import write_docker_archive, write_oci_archive

CONFIG = {
    "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["A=1"], "WorkingDir": "/w", "User": "1:2"}
}
LAYERS = [[("a", "file", "one")], [("b", "file", "two")]]


def layer_files(tmp_path: Path) -> list[Path]:
    paths = []
    for index, entries in enumerate(LAYERS):
        path = tmp_path / f"layer{index}.tar"
        path.write_bytes(layer_bytes(entries))
        paths.append(path)
    return paths


def names_in_layers(archive: ImageArchive) -> list[list[str]]:
    return [[member.name for member in layer] for layer in archive.layers()]


def write_tar(path: Path, members: dict[str, bytes | str]) -> Path:
    """A tar of ``members``; a str value makes a symlink to that member."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def oci_members(layers: list[bytes], config: dict[str, Any], index_wrap: bool = False) -> dict[str, bytes | str]:
    """An OCI layout; with ``index_wrap`` the top index points at a multi-platform index."""
    blobs: dict[str, bytes | str] = {}
    descriptors = []
    for data in layers:
        blobs[f"blobs/sha256/{sha(data)}"] = data
        descriptors.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{sha(data)}", "size": len(data)}
        )
    diff_ids = [f"sha256:{sha(d)}" for d in layers]
    config_bytes = json.dumps({**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    blobs[f"blobs/sha256/{sha(config_bytes)}"] = config_bytes
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": f"sha256:{sha(config_bytes)}", "size": len(config_bytes)},
            "layers": descriptors,
        }
    ).encode()
    blobs[f"blobs/sha256/{sha(manifest)}"] = manifest
    top = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{sha(manifest)}",
        "size": len(manifest),
    }
    if index_wrap:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        other = dict(top, digest="sha256:" + "0" * 64, platform={"os": "linux", "architecture": "s390x"})
        nested = json.dumps(
            {"schemaVersion": 2, "manifests": [other, dict(top, platform={"os": "linux", "architecture": arch})]}
        ).encode()
        blobs[f"blobs/sha256/{sha(nested)}"] = nested
        top = {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": f"sha256:{sha(nested)}",
            "size": len(nested),
        }
    index = {"schemaVersion": 2, "manifests": [dict(top, annotations={"org.opencontainers.image.ref.name": "demo:1"})]}
    return {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode(), **blobs}


def test_legacy_docker_save(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    write_docker_archive(path, layer_files(tmp_path), CONFIG, "demo:1")
    with ImageArchive(path) as archive:
        assert archive.config == ImageConfig(("/bin/sh",), ("-c", "true"), ("A=1",), "/w", "1:2")
        assert archive.digest.startswith("sha256:")
        assert names_in_layers(archive) == [["a"], ["b"]]


def test_oci_archive_with_gzip_layers(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    write_oci_archive(path, layer_files(tmp_path), CONFIG, "demo:1")
    with ImageArchive(path) as archive:
        assert archive.config.cmd == ("-c", "true")
        assert names_in_layers(archive) == [["a"], ["b"]]


def test_docker_25_layout_with_both_manifest_and_index(tmp_path: Path) -> None:
    layers = [layer_bytes(entries) for entries in LAYERS]
    members = oci_members(layers, CONFIG)
    config_name = next(n for n, d in members.items() if isinstance(d, bytes) and b'"diff_ids"' in d)
    manifest = [{"Config": config_name, "RepoTags": ["demo:1"], "Layers": [f"blobs/sha256/{sha(d)}" for d in layers]}]
    members["manifest.json"] = json.dumps(manifest).encode()
    with ImageArchive(write_tar(tmp_path / "image.tar", members)) as archive:
        assert names_in_layers(archive) == [["a"], ["b"]]


def test_nested_multi_platform_index_picks_this_machine(tmp_path: Path) -> None:
    members = oci_members([layer_bytes(LAYERS[0])], CONFIG, index_wrap=True)
    with ImageArchive(write_tar(tmp_path / "image.tar", members)) as archive:
        assert names_in_layers(archive) == [["a"]]


def test_podman_docker_archive_with_symlinked_layer_members(tmp_path: Path) -> None:
    layer = layer_bytes(LAYERS[0])
    config = json.dumps({**CONFIG, "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(layer)}"] * 2}}).encode()
    members: dict[str, bytes | str] = {
        f"{sha(layer)}.tar": layer,
        "again.tar": f"{sha(layer)}.tar",
        "config.json": config,
        "manifest.json": json.dumps(
            [
                {
                    "Config": "config.json",
                    "RepoTags": ["localhost/demo:latest"],
                    "Layers": [f"{sha(layer)}.tar", "again.tar"],
                }
            ]
        ).encode(),
    }
    with ImageArchive(write_tar(tmp_path / "image.tar", members), tag="demo") as archive:
        assert names_in_layers(archive) == [["a"], ["a"]]


def test_several_images_need_a_tag(tmp_path: Path) -> None:
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    write_docker_archive(first, layer_files(tmp_path)[:1], CONFIG, "one:1")
    write_docker_archive(second, layer_files(tmp_path)[1:], CONFIG, "two:2")
    members: dict[str, bytes | str] = {}
    manifests = []
    for path in (first, second):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name != "manifest.json":
                    members[member.name] = tar.extractfile(member).read()
            manifests += json.load(tar.extractfile("manifest.json"))
    members["manifest.json"] = json.dumps(manifests).encode()
    combined = write_tar(tmp_path / "both.tar", members)
    with pytest.raises(InvalidImage, match=r"holds 2 images \(one:1, two:2\); choose one with --tag"):
        ImageArchive(combined).__enter__()
    with ImageArchive(combined, tag="two:2") as archive:
        assert names_in_layers(archive) == [["b"]]
    with pytest.raises(InvalidImage, match=r"no image tagged 'three'.*one:1, two:2"):
        ImageArchive(combined, tag="three").__enter__()


def test_oci_blob_digest_mismatch(tmp_path: Path) -> None:
    members = oci_members([layer_bytes(LAYERS[0])], CONFIG)
    layer_name = next(n for n, d in members.items() if isinstance(d, bytes) and d == layer_bytes(LAYERS[0]))
    members[layer_name] = layer_bytes([("a", "file", "tampered")])
    with ImageArchive(write_tar(tmp_path / "image.tar", members)) as archive:
        with pytest.raises(InvalidImage, match="blob digest mismatch"):
            names_in_layers(archive)


def test_diff_id_mismatch(tmp_path: Path) -> None:
    layer = layer_bytes(LAYERS[0])
    config = json.dumps({**CONFIG, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}).encode()
    members = {
        "l.tar": layer,
        "c.json": config,
        "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": [], "Layers": ["l.tar"]}]).encode(),
    }
    with ImageArchive(write_tar(tmp_path / "image.tar", members)) as archive:
        with pytest.raises(InvalidImage, match="diff_id mismatch"):
            names_in_layers(archive)


def test_zstd_layers_are_refused_with_advice(tmp_path: Path) -> None:
    zstd = b"\x28\xb5\x2f\xfd" + b"\0" * 64
    members = {
        "l.tar": zstd,
        "c.json": json.dumps(CONFIG).encode(),
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l.tar"]}]).encode(),
    }
    with ImageArchive(write_tar(tmp_path / "image.tar", members)) as archive:
        with pytest.raises(InvalidImage, match="zstd-compressed layers are not supported"):
            names_in_layers(archive)


BROKEN: list[tuple[str, dict[str, bytes | str], str]] = [
    ("no manifest nor index", {"x": b"y"}, "neither manifest.json"),
    ("invalid manifest json", {"manifest.json": b"{not json"}, "manifest.json is not valid JSON"),
    ("empty manifest", {"manifest.json": b"[]"}, "non-empty list"),
    ("missing config", {"manifest.json": b'[{"Config": "c.json", "Layers": []}]'}, "no member 'c.json'"),
    (
        "missing layer",
        {"manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar"]}]', "c.json": b"{}"},
        "no member 'l.tar'",
    ),
    (
        "config not an object",
        {"manifest.json": b'[{"Config": "c.json", "Layers": []}]', "c.json": b"[1]"},
        "not a JSON object",
    ),
    (
        "cmd not strings",
        {"manifest.json": b'[{"Config": "c.json", "Layers": []}]', "c.json": b'{"config": {"Cmd": [1]}}'},
        "Cmd is not a list of strings",
    ),
    (
        "diff_ids count",
        {"manifest.json": b'[{"Config": "c.json", "Layers": []}]', "c.json": b'{"rootfs": {"diff_ids": ["sha256:x"]}}'},
        "1 diff_ids for 0 layers",
    ),
    ("index without manifests", {"index.json": b'{"manifests": []}'}, "lists no manifests"),
    ("bad digest", {"index.json": b'{"manifests": [{"digest": "md5:abc"}]}'}, "malformed digest"),
    (
        "dangling layer symlink",
        {"manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar"]}]', "c.json": b"{}", "l.tar": "gone.tar"},
        "links to a missing member",
    ),
]


@pytest.mark.parametrize("members, message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_archives_say_what_is_wrong(tmp_path: Path, members: dict[str, bytes | str], message: str) -> None:
    path = write_tar(tmp_path / "image.tar", members)
    with pytest.raises(InvalidImage, match=message):
        with ImageArchive(path) as archive:
            names_in_layers(archive)


def test_not_a_tar_at_all(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"hello, I am not a tarball" * 40)
    with pytest.raises(InvalidImage, match="not a tar archive"):
        ImageArchive(path).__enter__()


def test_image_config_round_trips_through_json() -> None:
    config = ImageConfig(("a",), ("b", "c"), ("X=1",), "/w", "u")
    assert ImageConfig.from_json(config.to_json()) == config
    assert ImageConfig.from_image_config({"config": None}) == ImageConfig((), (), (), "", "")
