"""Thin uploads: held layers cut out of a tar stream as it passes, in every layout, and what the
import makes of the members that stand for them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from faasd.errors import Conflict, InvalidImage
from faasd.images.archive import ImageArchive
from faasd.images.layers import LayerStore
from faasd.images.thin import OMITTED_LAYER, LayerStripper, Rewind
from faasd.images.unpack import Budget, UnpackLimits
from tests.unit.images.layers import entry_info, layer_bytes, tar_bytes, write_blobs_first_archive
from tools.build_image import write_docker_archive, write_oci_archive

CONFIG = {"config": {"Cmd": ["/bin/app"]}}
MAX_BYTES = 1 << 24
# Incompressible, so that even gzip leaves the base's blob large enough to be worth leaving out.
BASE = layer_bytes([("bin/app", "file", os.urandom(300_000)), ("etc", "dir", "")])
APP = layer_bytes([("app/name", "file", "second")])
BASE_DIFF_ID = f"sha256:{hashlib.sha256(BASE).hexdigest()}"
Writer = Callable[[Path, list[Path], dict[str, Any], str], None]
LAYOUTS: dict[str, Writer] = {
    "legacy": write_docker_archive,
    "oci": write_oci_archive,
    "blobs-first": write_blobs_first_archive,
}


def archive_bytes(tmp_path: Path, layout: str) -> bytes:
    """The image BASE + APP in ``layout``, as the file a save would write."""
    base, app = tmp_path / "base.tar", tmp_path / "app.tar"
    base.write_bytes(BASE)
    app.write_bytes(APP)
    out = tmp_path / f"{layout}.tar"
    LAYOUTS[layout](out, [base, app], CONFIG, "second:1")
    return out.read_bytes()


def apply(pieces: Iterable[bytes | Rewind], out: io.BytesIO) -> None:
    """Write ``pieces`` as the daemon's upload file does."""
    for piece in pieces:
        if isinstance(piece, Rewind):
            out.truncate(piece.offset)
            out.seek(piece.offset)
            out.write(piece.data)
        else:
            out.write(piece)


def strip(data: bytes, held: set[str], chunk: int = 1 << 20, measure: bool = False) -> tuple[bytes, LayerStripper]:
    """``data`` fed to a stripper ``chunk`` bytes at a time: what it lets through."""
    stripper = LayerStripper(held.__contains__, measure=measure)
    out = io.BytesIO()
    for start in range(0, len(data), chunk):
        apply(stripper.feed(data[start : start + chunk]), out)
    apply(stripper.close(), out)
    return out.getvalue(), stripper


def opened(tmp_path: Path, data: bytes) -> ImageArchive:
    path = tmp_path / "upload.tar"
    path.write_bytes(data)
    return ImageArchive(path, None, MAX_BYTES)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chunk", [7, 512, 1 << 20])
def test_with_nothing_held_every_byte_passes_unchanged(tmp_path: Path, layout: str, chunk: int) -> None:
    data = archive_bytes(tmp_path, layout)
    assert strip(data, set(), chunk, measure=True)[0] == data


@pytest.mark.parametrize("layout", ["oci", "blobs-first"])
@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_a_held_layer_told_by_metadata_or_name_is_left_out_as_it_streams(
    tmp_path: Path, layout: str, chunk: int
) -> None:
    """OCI: index, manifest and config pass before the layers. Docker >= 25: each layer's name is its diff_id."""
    data = archive_bytes(tmp_path, layout)
    thin, stripper = strip(data, {BASE_DIFF_ID}, chunk)
    assert len(thin) < len(data) - 250_000
    assert (stripper.left_out.layers, stripper.left_out.bytes > 250_000) == (1, True)
    with opened(tmp_path, thin) as archive:
        assert (archive.omitted(1), archive.omitted(2)) == (True, False)
        assert archive.diff_id(1) == BASE_DIFF_ID
        with archive.open_layer(2) as layer:
            assert layer.getnames() == ["app/name"]


def test_the_legacy_layout_read_once_is_sent_whole_but_measured_where_it_is_written(tmp_path: Path) -> None:
    """Its manifest.json comes after the layers: only hashing the layer as it passes can tell it."""
    data = archive_bytes(tmp_path, "legacy")
    assert strip(data, {BASE_DIFF_ID})[0] == data
    thin, stripper = strip(data, {BASE_DIFF_ID}, chunk=4096, measure=True)
    assert len(thin) < len(data) - 250_000 and stripper.left_out.layers == 1
    with opened(tmp_path, thin) as archive:
        assert (archive.omitted(1), archive.diff_id(1)) == (True, BASE_DIFF_ID)


def test_members_that_arrive_left_out_are_counted_and_passed_on(tmp_path: Path) -> None:
    thin, _ = strip(archive_bytes(tmp_path, "blobs-first"), {BASE_DIFF_ID})
    again, stripper = strip(thin, {BASE_DIFF_ID}, measure=True)
    assert again == thin and stripper.markers == 1 and stripper.left_out.layers == 0


def test_a_long_member_name_in_a_pax_header_is_kept_by_its_marker(tmp_path: Path) -> None:
    long_name = "x" * 150 + "/layer.tar"
    config = json.dumps({**CONFIG, "rootfs": {"type": "layers", "diff_ids": [BASE_DIFF_ID]}}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": [long_name]}]).encode()
    members = [("c.json", config), ("manifest.json", manifest), (long_name, BASE)]
    data = tar_bytes([entry_info(name, "file", payload) for name, payload in members])
    thin, _ = strip(data, {BASE_DIFF_ID}, chunk=100)
    with opened(tmp_path, thin) as archive:
        assert archive.omitted(1)


def test_after_a_global_header_everything_passes_as_it_is(tmp_path: Path) -> None:
    """The walker does not follow global PAX headers: it leaves the archive whole, for the import."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g"}) as tar:
        info, payload = entry_info("blobs/sha256/" + BASE_DIFF_ID[7:], "file", BASE)
        tar.addfile(info, io.BytesIO(payload))
    data = buffer.getvalue()
    assert strip(data, {BASE_DIFF_ID})[0] == data


def test_a_truncated_stream_passes_as_it_is(tmp_path: Path) -> None:
    data = archive_bytes(tmp_path, "oci")[:-5000]
    assert strip(data, set(), chunk=333)[0] == data


@pytest.mark.parametrize(
    ("layer", "config_diff_id", "config_marker", "message"),
    [
        ("marker", "sha256:" + "1" * 64, False, "was left out of the upload as sha256:bbbb"),
        ("marker", BASE_DIFF_ID, True, "'c.json' was left out of the upload, but only layers may be"),
        ("marker-with-data", BASE_DIFF_ID, False, "is not an empty file naming a diff_id"),
        ("bad-digest", BASE_DIFF_ID, False, "is not an empty file naming a diff_id"),
    ],
)
def test_a_member_left_out_that_the_image_does_not_vouch_for_is_refused(
    tmp_path: Path, layer: str, config_diff_id: str, config_marker: bool, message: str
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("l/layer.tar")
        info.pax_headers = {OMITTED_LAYER: "sha256:" + "b" * 64 if layer != "bad-digest" else "md5:00"}
        payload = b"data" if layer == "marker-with-data" else b""
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        config = json.dumps({**CONFIG, "rootfs": {"type": "layers", "diff_ids": [config_diff_id]}}).encode()
        if config_marker:
            info = tarfile.TarInfo("c.json")
            info.pax_headers = {OMITTED_LAYER: BASE_DIFF_ID}
            tar.addfile(info)
        else:
            info, payload = entry_info("c.json", "file", config)
            tar.addfile(info, io.BytesIO(payload))
        manifest = json.dumps([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l/layer.tar"]}]).encode()
        info, payload = entry_info("manifest.json", "file", manifest)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(InvalidImage, match=message.replace("(", r"\(")):
        opened(tmp_path, buffer.getvalue()).__enter__()


def test_a_layer_left_out_that_the_store_no_longer_holds_is_a_conflict_and_nothing_is_unpacked(
    tmp_path: Path,
) -> None:
    thin, _ = strip(archive_bytes(tmp_path, "blobs-first"), {BASE_DIFF_ID})
    store = LayerStore(tmp_path / "layers", id_base=os.getuid())
    with opened(tmp_path, thin) as archive, store.session() as session:
        with pytest.raises(Conflict, match="no longer holds it .* deploy again"):
            session.import_layers(archive, Budget(UnpackLimits(max_bytes=MAX_BYTES, max_entries=100)))
    assert not (tmp_path / "layers" / "sha256").exists() or not any((tmp_path / "layers" / "sha256").iterdir())
