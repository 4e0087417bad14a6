"""The tarball a pull lays out is one the import reads: the registry's bytes where the manifest
says, the layers faasd holds left out as a thin upload leaves them. No network: the fetched
blobs are written into their regions here, as the fetch would."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from faasd.errors import InvalidImage
from faasd.images.archive import ImageArchive
from faasd.images.distribution import Manifest
from faasd.images.pull import Layer, Pull, _document, _write_layout
from faasd.images.reference import Reference
from tests.unit.images.layers import layer_bytes

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def resolved(held: set[int]) -> tuple[Pull, dict[str, bytes]]:
    """A pull as ``resolve`` leaves it, of a gzip base layer, an uncompressed app layer, and the
    base layer again; layers numbered in ``held`` are held. Also each blob by digest."""
    base = layer_bytes([("bin", "dir", ""), ("bin/sh", "file", "#!")])
    app = layer_bytes([("app", "dir", ""), ("app/main", "file", "print('hi')")])
    blobs = [gzip.compress(base, mtime=0), app, gzip.compress(base, mtime=0)]
    diff_ids = [digest(base), digest(app), digest(base)]
    config = json.dumps({"config": {"Cmd": ["/app/main"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"digest": digest(config), "size": len(config)},
            "layers": [{"digest": digest(blob), "size": len(blob)} for blob in blobs],
        }
    ).encode()
    pull = Pull(None, Reference.parse("127.0.0.1:5000/team/app:1"), lambda _d: False)  # type: ignore[arg-type]
    pull.manifest = Manifest(manifest, DOCKER_MANIFEST, digest(manifest))
    pull.resolved_digest = pull.manifest.digest
    pull.config, pull.config_digest = config, digest(config)
    pull.layers = tuple(
        Layer(digest(blob), len(blob), diff_id, n in held)
        for n, (blob, diff_id) in enumerate(zip(blobs, diff_ids, strict=True), start=1)
    )
    return pull, {digest(blob): blob for blob in blobs}


def fetched(pull: Pull, blobs: dict[str, bytes], path: Path, damage: bool = False) -> Path:
    members, regions = pull._layout()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _write_layout(fd, members)
        for layer, offset in regions:
            data = bytearray(blobs[layer.digest])
            if damage:
                data[-1] ^= 0xFF
            os.pwrite(fd, bytes(data), offset)
    finally:
        os.close(fd)
    return path


def test_the_layout_is_an_oci_archive_the_import_reads_with_every_digest_checked(tmp_path: Path) -> None:
    pull, blobs = resolved(held=set())
    with ImageArchive(fetched(pull, blobs, tmp_path / "pull.tar"), None, 1 << 30) as archive:
        assert archive.digest == pull.config_digest and archive.config.cmd == ("/app/main",)
        assert archive.layer_count == 3
        for number, layer in enumerate(archive.layers(), start=1):
            assert layer.getnames(), number
        assert archive.diff_id(1) == archive.diff_id(3) == pull.layers[0].diff_id


def test_a_layer_held_is_left_out_and_fetched_once_when_used_twice(tmp_path: Path) -> None:
    pull, blobs = resolved(held={1, 3})
    members, regions = pull._layout()
    assert [layer.digest for layer, _ in regions] == [pull.layers[1].digest]
    assert pull.missing_bytes == pull.layers[1].size
    with ImageArchive(fetched(pull, blobs, tmp_path / "pull.tar"), None, 1 << 30) as archive:
        assert [archive.omitted(n) for n in (1, 2, 3)] == [True, False, True]


def test_bytes_the_fetch_let_through_are_still_checked_by_the_import(tmp_path: Path) -> None:
    pull, blobs = resolved(held=set())
    with ImageArchive(fetched(pull, blobs, tmp_path / "pull.tar", damage=True), None, 1 << 30) as archive:
        with pytest.raises(InvalidImage, match="mismatch|corrupt"):
            list(archive.layers())


@pytest.mark.parametrize(
    ("document", "header", "kind"),
    [
        ({"schemaVersion": 2, "manifests": []}, "application/json", "application/vnd.oci.image.index.v1+json"),
        ({"schemaVersion": 2, "layers": [], "config": {}}, "", "application/vnd.oci.image.manifest.v1+json"),
        ({"mediaType": DOCKER_MANIFEST, "layers": []}, "text/plain", DOCKER_MANIFEST),
    ],
)
def test_the_media_type_comes_from_the_document_then_the_header_then_its_shape(
    document: dict[str, object], header: str, kind: str
) -> None:
    data = json.dumps(document).encode()
    assert _document(Manifest(data, header, digest(data)))[1] == kind


@pytest.mark.parametrize(
    ("document", "header", "message"),
    [
        ({"schemaVersion": 1, "fsLayers": []}, "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
        ({"schemaVersion": 2}, "application/x-custom", "unsupported media type"),
        ([1, 2], "application/json", "not a JSON object"),
    ],
)
def test_manifests_faasd_cannot_use_are_refused_by_name(document: object, header: str, message: str) -> None:
    data = json.dumps(document).encode()
    with pytest.raises(InvalidImage, match=message):
        _document(Manifest(data, header, digest(data)))
