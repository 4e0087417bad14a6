"""Reading image tarballs in every layout users' tools write, and refusing broken ones."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from faasd.errors import InvalidImage
from faasd.images.archive import ImageArchive, ImageConfig
from faasd.images.unpack import UnpackLimits, apply_layers
from tests.unit.images.layers import layer_bytes

CONFIG = {
    "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["A=1"], "WorkingDir": "/w", "User": "1:2"}
}
LAYERS = [layer_bytes([("a", "file", "one")]), layer_bytes([("b", "file", "two")])]
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_BYTES = 1 << 20


class Link(NamedTuple):
    """An archive member that is a link ("symlink" or "hardlink") to another member."""

    kind: str
    target: str


Members = Mapping[str, bytes | Link | None]  # None: a directory
Blobs = dict[str, bytes]


def write_tar(path: Path, members: Members, compress: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, Link):
                info.type = tarfile.SYMTYPE if data.kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data.target
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_bytes(layers: list[bytes], config: dict[str, Any] = CONFIG) -> bytes:
    """An image config whose diff_ids are the digests of the uncompressed ``layers``."""
    return json.dumps(
        {**config, "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(d)}" for d in layers]}}
    ).encode()


def docker_save(
    layers: list[bytes], tags: list[str] | None = None, gzip_layers: bool = False, config: bytes | None = None
) -> Blobs:
    """The legacy layout: <id>/layer.tar, <config digest>.json, manifest.json."""
    config = config or config_bytes(layers)
    members: Blobs = {f"{sha(config)}.json": config}
    names = []
    for data in layers:
        names.append(f"{sha(data)}/layer.tar")
        members[names[-1]] = gzip.compress(data) if gzip_layers else data
    entry = {"Config": f"{sha(config)}.json", "RepoTags": tags if tags is not None else ["demo:1"], "Layers": names}
    members["manifest.json"] = json.dumps([entry]).encode()
    return members


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{sha(data)}", "size": len(data), **extra}


def oci_layout(
    layers: list[bytes],
    gzip_layers: bool = False,
    annotations: dict[str, str] | None = None,
    nested: bool = False,
    config: bytes | None = None,
) -> Blobs:
    """An OCI image layout; with ``nested`` index.json points at a multi-platform index."""
    blobs: Blobs = {}

    def blob(data: bytes) -> bytes:
        blobs[f"blobs/sha256/{sha(data)}"] = data
        return data

    stored = [blob(gzip.compress(d) if gzip_layers else d) for d in layers]
    config = blob(config or config_bytes(layers))
    manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", d) for d in stored],
            }
        ).encode()
    )
    top = descriptor(OCI_MANIFEST, manifest)
    if nested:
        index = blob(json.dumps(multi_platform([dict(top, platform={"os": "linux", "architecture": ARCH})])).encode())
        top = descriptor(OCI_INDEX, index)
    top["annotations"] = annotations if annotations is not None else {"org.opencontainers.image.ref.name": "demo:1"}
    index_json = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    return {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index_json, **blobs}


def multi_platform(ours: list[dict[str, Any]]) -> dict[str, Any]:
    """An index with ``ours`` between another platform and a buildx attestation, whose blobs are absent."""
    other = descriptor(OCI_MANIFEST, b"s390x", platform={"os": "linux", "architecture": "s390x"})
    attestation = descriptor(OCI_MANIFEST, b"att", platform={"os": "unknown", "architecture": "unknown"})
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [other, *ours, attestation]}


def names_in_layers(archive: ImageArchive) -> list[list[str]]:
    return [[member.name for member in layer] for layer in archive.layers()]


def read(path: Path, tag: str | None = None) -> list[list[str]]:
    with ImageArchive(path, tag, MAX_BYTES) as archive:
        return names_in_layers(archive)


@pytest.mark.parametrize("gzip_layers", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("layout", [docker_save, oci_layout], ids=["docker-save", "oci"])
def test_layouts_and_compressions(tmp_path: Path, layout: Any, gzip_layers: bool) -> None:
    path = write_tar(tmp_path / "image.tar", layout(LAYERS, gzip_layers=gzip_layers))
    with ImageArchive(path, None, MAX_BYTES) as archive:
        assert archive.config == ImageConfig(("/bin/sh",), ("-c", "true"), ("A=1",), "/w", "1:2")
        assert archive.digest == f"sha256:{sha(config_bytes(LAYERS))}"
        assert names_in_layers(archive) == [["a"], ["b"]]


def test_layers_unpack_end_to_end(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "image.tar", oci_layout(LAYERS, gzip_layers=True))
    (tmp_path / "rootfs").mkdir()
    with ImageArchive(path, None, MAX_BYTES) as archive:
        apply_layers(archive.layers(), tmp_path / "rootfs", UnpackLimits(max_bytes=100, max_entries=100), 0)
    assert (tmp_path / "rootfs" / "a").read_text() == "one" and (tmp_path / "rootfs" / "b").read_text() == "two"


def test_a_gzipped_archive(tmp_path: Path) -> None:
    """docker save | gzip > image.tar.gz"""
    assert read(write_tar(tmp_path / "image.tar.gz", docker_save(LAYERS), compress=True)) == [["a"], ["b"]]


def test_docker_25_writes_both_and_manifest_json_wins(tmp_path: Path) -> None:
    members = oci_layout(LAYERS)
    config = config_bytes(LAYERS)
    entry = {
        "Config": f"blobs/sha256/{sha(config)}",
        "RepoTags": ["demo:1"],
        "Layers": [f"blobs/sha256/{sha(d)}" for d in LAYERS],
    }
    members["manifest.json"] = json.dumps([entry]).encode()
    members["index.json"] = b"{never read"
    with ImageArchive(write_tar(tmp_path / "image.tar", members), None, MAX_BYTES) as archive:
        assert archive.digest == f"sha256:{sha(config)}"
        assert names_in_layers(archive) == [["a"], ["b"]]


def test_docker_25_blob_names_are_digests_to_check(tmp_path: Path) -> None:
    members = docker_save(LAYERS)
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"][0] = "blobs/sha256/" + "0" * 64
    members["blobs/sha256/" + "0" * 64] = LAYERS[0]
    members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(InvalidImage, match=r"layer 1 \(blobs/sha256/000000000000…\): blob digest mismatch"):
        read(write_tar(tmp_path / "image.tar", members))


def test_nested_multi_platform_index_picks_this_machine(tmp_path: Path) -> None:
    assert read(write_tar(tmp_path / "image.tar", oci_layout(LAYERS[:1], nested=True))) == [["a"]]


def test_top_level_index_of_platforms_picks_this_machine(tmp_path: Path) -> None:
    members = oci_layout(LAYERS[:1])
    index = json.loads(members["index.json"])
    ours = dict(index["manifests"][0], platform={"os": "linux", "architecture": ARCH})
    members["index.json"] = json.dumps(multi_platform([ours])).encode()
    assert read(write_tar(tmp_path / "image.tar", members)) == [["a"]]


def test_no_manifest_for_this_machine(tmp_path: Path) -> None:
    index = json.dumps(multi_platform([])).encode()
    members = {
        "index.json": json.dumps({"manifests": [descriptor(OCI_INDEX, index)]}).encode(),
        f"blobs/sha256/{sha(index)}": index,
    }
    with pytest.raises(InvalidImage, match=f"no manifest for linux/{ARCH}"):
        read(write_tar(tmp_path / "image.tar", members))


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_podman_docker_archive_links_repeated_layers(tmp_path: Path, kind: str) -> None:
    layer = LAYERS[0]
    members: Members = {
        f"{sha(layer)}.tar": layer,
        "again.tar": Link(kind, f"{sha(layer)}.tar"),
        "config.json": config_bytes([layer, layer]),
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
    assert read(write_tar(tmp_path / "image.tar", members), tag="demo") == [["a"], ["a"]]


def two_images(tmp_path: Path) -> Path:
    first, second = docker_save(LAYERS[:1], ["one:1", "docker.io/library/shared:1"]), docker_save(LAYERS[1:], ["two:2"])
    manifest = json.loads(first.pop("manifest.json")) + json.loads(second.pop("manifest.json"))
    return write_tar(tmp_path / "both.tar", {**first, **second, "manifest.json": json.dumps(manifest).encode()})


def test_several_images_need_a_tag(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidImage, match=r"holds 2 images \(one:1, docker.io/library/shared:1, two:2\); choose one with --tag"
    ):
        read(two_images(tmp_path))


@pytest.mark.parametrize("tag, names", [("two:2", [["b"]]), ("one:1", [["a"]]), ("shared:1", [["a"]])])
def test_a_tag_chooses_the_image(tmp_path: Path, tag: str, names: list[list[str]]) -> None:
    assert read(two_images(tmp_path), tag) == names


def test_an_unknown_tag_lists_the_tags(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=r"no image tagged 'three' in the archive \(tags: one:1, .*two:2\)"):
        read(two_images(tmp_path), "three")


def test_an_exact_tag_beats_a_looser_match(tmp_path: Path) -> None:
    first, second = docker_save(LAYERS[:1], ["docker.io/library/demo:latest"]), docker_save(LAYERS[1:], ["demo"])
    manifest = json.loads(first.pop("manifest.json")) + json.loads(second.pop("manifest.json"))
    path = write_tar(tmp_path / "both.tar", {**first, **second, "manifest.json": json.dumps(manifest).encode()})
    assert read(path, "demo") == [["b"]]


@pytest.mark.parametrize(
    "annotations, tag",
    [
        ({"org.opencontainers.image.ref.name": "demo:1"}, "demo:1"),
        ({"io.containerd.image.name": "docker.io/library/demo:1", "org.opencontainers.image.ref.name": "1"}, "demo:1"),
        ({"io.containerd.image.name": "docker.io/library/demo:latest"}, "demo"),
    ],
)
def test_oci_tags_come_from_annotations(tmp_path: Path, annotations: dict[str, str], tag: str) -> None:
    members = oci_layout(LAYERS[:1], annotations=annotations)
    other = oci_layout(LAYERS[1:], annotations={"org.opencontainers.image.ref.name": "other:1"})
    index = json.loads(members["index.json"])
    index["manifests"] += json.loads(other["index.json"])["manifests"]
    path = write_tar(tmp_path / "image.tar", {**members, **other, "index.json": json.dumps(index).encode()})
    assert read(path, tag) == [["a"]]
    with pytest.raises(InvalidImage, match="holds 2 images"):
        read(path)


def tamper(members: Blobs, original: bytes, replacement: bytes) -> None:
    name = next(n for n, d in members.items() if d == original)
    members[name] = replacement


def test_oci_layer_digest_mismatch_names_the_blob(tmp_path: Path) -> None:
    members = oci_layout(LAYERS[:1])
    tamper(members, LAYERS[0], layer_bytes([("a", "file", "tampered")]))
    with pytest.raises(InvalidImage, match=rf"layer 1 \(blobs/sha256/{sha(LAYERS[0])[:12]}…\): blob digest mismatch"):
        read(write_tar(tmp_path / "image.tar", members))


def test_digests_are_checked_even_when_a_layer_is_not_read(tmp_path: Path) -> None:
    members = oci_layout(LAYERS[:1], gzip_layers=True)
    stored = gzip.compress(LAYERS[0])
    tamper(members, stored, gzip.compress(layer_bytes([("a", "file", "tampered")])))
    with ImageArchive(write_tar(tmp_path / "image.tar", members), None, MAX_BYTES) as archive:
        with pytest.raises(InvalidImage, match="blob digest mismatch"):
            for _ in archive.layers():
                pass


def test_oci_config_digest_mismatch(tmp_path: Path) -> None:
    members = oci_layout(LAYERS[:1])
    tamper(members, config_bytes(LAYERS[:1]), config_bytes(LAYERS[:1], {"config": {"Cmd": ["evil"]}}))
    with pytest.raises(InvalidImage, match=r"blob sha256:[0-9a-f]{12}…: digest mismatch"):
        read(write_tar(tmp_path / "image.tar", members))


@pytest.mark.parametrize("layout", [docker_save, oci_layout], ids=["docker-save", "oci"])
def test_diff_id_mismatch(tmp_path: Path, layout: Any) -> None:
    config = json.loads(config_bytes(LAYERS))
    config["rootfs"]["diff_ids"][1] = "sha256:" + "1" * 64
    members = layout(LAYERS, gzip_layers=True, config=json.dumps(config).encode())
    with pytest.raises(InvalidImage, match=r"layer 2 \(.*\): diff_id mismatch"):
        read(write_tar(tmp_path / "image.tar", members))


def test_zstd_layers_are_refused_with_advice(tmp_path: Path) -> None:
    members = docker_save(LAYERS[:1])
    tamper(members, LAYERS[0], b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    with pytest.raises(InvalidImage, match="zstd-compressed layers are not supported; save the image with gzip"):
        read(write_tar(tmp_path / "image.tar", members))


def test_corrupt_gzip_is_an_invalid_image(tmp_path: Path) -> None:
    members = docker_save([layer_bytes([("a", "file", os.urandom(100_000))])], gzip_layers=True)
    name = next(n for n in members if n.endswith("layer.tar"))
    members[name] = members[name][:50_000]
    (tmp_path / "rootfs").mkdir()
    with ImageArchive(write_tar(tmp_path / "image.tar", members), None, MAX_BYTES) as archive:
        with pytest.raises(InvalidImage, match="layer 1: entry 'a': the layer's compressed data is corrupt"):
            apply_layers(archive.layers(), tmp_path / "rootfs", UnpackLimits(max_bytes=1 << 20, max_entries=100), 0)


def test_a_layer_that_is_no_tar(tmp_path: Path) -> None:
    members = docker_save(LAYERS[:1])
    tamper(members, LAYERS[0], gzip.compress(b"just text"))
    with pytest.raises(InvalidImage, match=r"layer 1 \([0-9a-f]{12}…/layer.tar\): not a tar stream"):
        read(write_tar(tmp_path / "image.tar", members))


MANIFEST = b'[{"Config": "c.json", "Layers": ["l.tar"]}]'
BROKEN: list[tuple[str, Members, str]] = [
    ("no manifest nor index", {"x": b"y"}, "neither manifest.json"),
    ("invalid manifest json", {"manifest.json": b"{not json"}, "manifest.json is not valid JSON"),
    ("empty manifest", {"manifest.json": b"[]"}, "non-empty list"),
    ("manifest entry lacks layers", {"manifest.json": b'[{"Config": "c.json"}]'}, "lacks Config or Layers"),
    ("missing config", {"manifest.json": MANIFEST}, "no member 'c.json'"),
    ("missing layer", {"manifest.json": MANIFEST, "c.json": b"{}"}, "no member 'l.tar'"),
    ("invalid config json", {"manifest.json": MANIFEST, "c.json": b"{", "l.tar": b""}, "c.json is not valid JSON"),
    ("config not an object", {"manifest.json": MANIFEST, "c.json": b"[1]", "l.tar": b""}, "not a JSON object"),
    (
        "cmd not strings",
        {"manifest.json": MANIFEST, "c.json": b'{"config": {"Cmd": [1]}}'},
        "Cmd is not a list of strings",
    ),
    (
        "diff_ids count",
        {"manifest.json": MANIFEST, "c.json": b'{"rootfs": {"diff_ids": []}}'},
        "0 diff_ids for 1 layers",
    ),
    ("layer is a directory", {"manifest.json": MANIFEST, "c.json": b"{}", "l.tar": None}, "not a file"),
    (
        "dangling layer link",
        {"manifest.json": MANIFEST, "c.json": b"{}", "l.tar": Link("symlink", "gone")},
        "links to 'gone', which is missing",
    ),
    (
        "layer link loop",
        {"manifest.json": MANIFEST, "c.json": b"{}", "l.tar": Link("symlink", "l.tar")},
        "chain of more than",
    ),
    ("index not an object", {"index.json": b"[]"}, "lists no manifests"),
    ("index without manifests", {"index.json": b'{"manifests": []}'}, "lists no manifests"),
    ("bad digest", {"index.json": b'{"manifests": [{"digest": "md5:abc"}]}'}, "malformed digest 'md5:abc'"),
    (
        "digest names a missing blob",
        {"index.json": b'{"manifests": [{"digest": "sha256:' + b"a" * 64 + b'"}]}'},
        "no member 'blobs/sha256/a",
    ),
]


@pytest.mark.parametrize("members, message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_archives_say_what_is_wrong(tmp_path: Path, members: Members, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        read(write_tar(tmp_path / "image.tar", members))


@pytest.mark.parametrize(
    "manifest, message",
    [
        (b"{nope", r"manifest sha256:[0-9a-f]{12}… is not valid JSON"),
        (b"[]", "is not a JSON object"),
        (b'{"mediaType": "application/vnd.example+json"}', "unsupported media type 'application/vnd.example\\+json'"),
        (b'{"mediaType": "' + OCI_MANIFEST.encode() + b'"}', "lacks config or layers"),
    ],
)
def test_broken_oci_manifests(tmp_path: Path, manifest: bytes, message: str) -> None:
    index = {"manifests": [descriptor("", manifest) | {"mediaType": None}]}
    members: Members = {"index.json": json.dumps(index).encode(), f"blobs/sha256/{sha(manifest)}": manifest}
    with pytest.raises(InvalidImage, match=message):
        read(write_tar(tmp_path / "image.tar", members))


def test_not_a_tar_at_all(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"hello, I am not a tarball" * 40)
    with pytest.raises(InvalidImage, match="not a tar archive"):
        ImageArchive(path, None, MAX_BYTES).__enter__()


def test_image_config_round_trips_through_json() -> None:
    config = ImageConfig(("a",), ("b", "c"), ("X=1",), "/w", "u")
    assert ImageConfig.from_json(config.to_json()) == config
    assert ImageConfig.from_image_config({"config": None}) == ImageConfig((), (), (), "", "")
    assert ImageConfig.from_image_config({"config": {"Cmd": None, "User": None}}) == ImageConfig((), (), (), "", "")
