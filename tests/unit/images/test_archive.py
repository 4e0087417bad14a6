"""Reading image tarballs in every layout users' tools write, and refusing broken ones."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from faasd.errors import ImageTooLarge, InvalidImage, InvalidRequest
from faasd.images import archive as archive_module
from faasd.images.archive import ImageArchive, ImageConfig, check_reference
from faasd.images.layers import LayerStore
from faasd.images.unpack import Budget, UnpackLimits
from tests.unit.images.layers import entry_info, layer_bytes, tar_bytes

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


def import_layers(tmp_path: Path, archive: ImageArchive, limits: UnpackLimits) -> list[Path]:
    """The archive's layers, unpacked into a layer store as an import does: their directories."""
    store = LayerStore(tmp_path / "layers", id_base=0)
    with store.session() as session:
        return [store.path(diff_id) for diff_id in session.import_layers(archive, Budget(limits))]


def test_layers_unpack_end_to_end(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "image.tar", oci_layout(LAYERS, gzip_layers=True))
    with ImageArchive(path, None, MAX_BYTES) as archive:
        first, second = import_layers(tmp_path, archive, UnpackLimits(max_bytes=100, max_entries=100))
    assert (first / "a").read_text() == "one" and (second / "b").read_text() == "two"


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
    with ImageArchive(write_tar(tmp_path / "image.tar", members), None, MAX_BYTES) as archive:
        with pytest.raises(InvalidImage, match="layer 1: entry 'a': the layer's compressed data is corrupt"):
            import_layers(tmp_path, archive, UnpackLimits(max_bytes=1 << 20, max_entries=100))


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


@pytest.mark.parametrize(
    "config, error, message",
    [
        ({"Env": ["A=b\0c"]}, InvalidImage, "Env holds a NUL byte"),
        ({"Entrypoint": ["/bin/\0sh"]}, InvalidImage, "Entrypoint holds a NUL byte"),
        ({"User": "app\0"}, InvalidImage, "User holds a NUL byte"),
        ({"Cmd": ["\ud800"]}, InvalidImage, "lone surrogate"),
        ({"Env": ["JUSTKEY"]}, InvalidImage, "Env entry 'JUSTKEY' is not NAME=VALUE"),
        ({"Env": ["=x"]}, InvalidImage, "Env entry '=x' is not NAME=VALUE"),
        ({"WorkingDir": "app"}, InvalidImage, "WorkingDir 'app' is not an absolute path"),
        ({"WorkingDir": "/app/../.."}, InvalidImage, "climbs"),
        ({"WorkingDir": "/" + "d/" * 2048}, InvalidImage, "longer than PATH_MAX"),
        ({"Env": ["X=" + "x" * archive_module.MAX_ARG_STRLEN]}, ImageTooLarge, "MAX_ARG_STRLEN"),
        ({"Cmd": ["x"] * 110_000}, ImageTooLarge, "take 1100000 bytes: at most 1048576"),
    ],
)
def test_a_config_no_process_could_start_with_is_refused(config: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ImageConfig.from_image_config({"config": config})


@pytest.mark.parametrize("member", ["manifest.json", "config", "index.json"])
def test_documents_over_the_limit_are_refused_unread(tmp_path: Path, member: str) -> None:
    members = oci_layout(LAYERS) if member == "index.json" else docker_save(LAYERS)
    name = next(n for n in members if n.endswith(".json") and n != "manifest.json") if member == "config" else member
    members[name] += b" " * archive_module.MAX_DOCUMENT
    with pytest.raises(ImageTooLarge, match=f"may be at most {archive_module.MAX_DOCUMENT}"):
        read(write_tar(tmp_path / "image.tar", members))


@pytest.mark.parametrize(
    "tag",
    ["demo", "demo:1", "localhost:5000/team/demo:v1.2-rc_3", "docker.io/library/demo:latest", "a__b/c-d", "1", "v1.0"],
)
def test_references_a_tag_may_be(tag: str) -> None:
    check_reference(tag)


@pytest.mark.parametrize("tag", ["demo:", ":1", "../etc", "a//b", "demo:1\n", "a b", "demo@", "-x", "x" * 400, "é"])
def test_malformed_tags_are_a_bad_request(tmp_path: Path, tag: str) -> None:
    with pytest.raises(InvalidRequest, match="is not an image reference: use NAME\\[:TAG\\]") as refused:
        ImageArchive(write_tar(tmp_path / "image.tar", docker_save(LAYERS)), tag, MAX_BYTES)
    assert not isinstance(refused.value, InvalidImage), "the request is wrong, not the image"


def test_a_compressed_archive_is_decompressed_within_the_limit_and_leaves_no_file(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    path = write_tar(uploads / "image.tar", docker_save(LAYERS), compress=True)
    size = len(gzip.decompress(path.read_bytes()))
    with ImageArchive(path, None, size) as archive:
        assert names_in_layers(archive) == [["a"], ["b"]]
    with pytest.raises(ImageTooLarge, match=f"the archive's contents uncompress to more than {size - 1} bytes"):
        ImageArchive(path, None, size - 1).__enter__()
    assert os.listdir(uploads) == ["image.tar"]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bzip2", "xz"])
def test_corrupt_compressed_archives_are_invalid(tmp_path: Path, compress: Any) -> None:
    data = compress(tar_bytes([entry_info("manifest.json", "file", os.urandom(200_000).hex())]))
    path = tmp_path / "image.tar"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImage, match="the upload's compressed data is corrupt"):
        ImageArchive(path, None, MAX_BYTES).__enter__()


def test_a_gzip_bomb_layer_stops_at_the_limit(tmp_path: Path) -> None:
    # A valid layer, then 64 MiB of zeros after its end: tarfile stops reading at the end
    # marker, but the diff_id covers the whole stream, so the zeros are read too.
    bomb = LAYERS[0] + bytes(64 << 20)
    members = docker_save([bomb], gzip_layers=True)
    assert sum(len(data) for data in members.values()) < 200_000
    with ImageArchive(write_tar(tmp_path / "image.tar", members), None, 1 << 20) as archive:
        with pytest.raises(ImageTooLarge, match=r"layer 1 \(.*\): the image's layers uncompress to more than 1048576"):
            names_in_layers(archive)


def test_the_layer_limit_spans_layers(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "image.tar", docker_save(LAYERS))
    with ImageArchive(path, None, sum(map(len, LAYERS))) as archive:
        assert names_in_layers(archive) == [["a"], ["b"]]
    with ImageArchive(path, None, sum(map(len, LAYERS)) - 1) as archive:
        with pytest.raises(ImageTooLarge, match="layer 2 "):
            names_in_layers(archive)


def test_a_member_named_twice_is_refused(tmp_path: Path) -> None:
    members = docker_save(LAYERS[:1])
    path = write_tar(tmp_path / "image.tar", {**members, "blobs": None})
    with tarfile.open(path, "a") as tar:  # append a second, different manifest.json and directory
        for name, data in (("./manifest.json", b"[]"), ("blobs/", None)):
            info, payload = entry_info(name, "dir" if data is None else "file", data or "")
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    with pytest.raises(InvalidImage, match=r"the archive has two members named '\./manifest\.json'"):
        read(path)


def test_an_archive_of_too_many_members_is_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "MAX_MEMBERS", 5)
    path = write_tar(tmp_path / "image.tar", {**docker_save(LAYERS[:1]), **{f"x{i}": b"" for i in range(3)}})
    with pytest.raises(InvalidImage, match="more than 5 members"):
        read(path)
    repeated = tmp_path / "dirs.tar"
    repeated.write_bytes(tar_bytes([entry_info("blobs/", "dir")] * 6))  # one directory, over and over
    with pytest.raises(InvalidImage, match="more than 5 members"):
        read(repeated)


def oversized_pax_entry() -> tuple[tarfile.TarInfo, bytes]:
    info, payload = entry_info("a", "file", "x")
    info.pax_headers = {"comment": "x" * (archive_module.MAX_EXTENDED_HEADER + 1)}
    assert isinstance(payload, bytes)
    return info, payload


def test_an_oversized_pax_header_in_a_layer_is_refused_before_it_is_read(tmp_path: Path) -> None:
    layer = tar_bytes([oversized_pax_entry()])
    with ImageArchive(write_tar(tmp_path / "image.tar", docker_save([layer])), None, 4 << 20) as archive:
        with pytest.raises(InvalidImage, match=r"layer 1 \(.*\): a tar header carries 10\d{5} bytes of PAX"):
            import_layers(tmp_path, archive, UnpackLimits(max_bytes=4 << 20, max_entries=100))


def test_an_oversized_pax_header_in_the_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(tar_bytes([oversized_pax_entry()]))
    with pytest.raises(InvalidImage, match="a tar header carries .* bytes of PAX records or GNU long names"):
        read(path)
