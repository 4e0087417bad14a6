"""Build layer tarballs in memory for tests: one tuple per entry.

Entries belong to the current user; tests of other owners build their ``TarInfo`` by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

# (name, kind, data): kind is "file", "dir", "symlink", "hardlink", "fifo", "chr"
Entry = tuple[str, str, str | bytes]
MTIME = 1_600_000_000


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A PAX tar of ``members``: each a header and, for a regular file, its contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def entry_info(name: str, kind: str, data: str | bytes = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid, info.gid = os.getuid(), os.getgid()
    payload = None
    if kind == "file":
        payload = data if isinstance(data, bytes) else data.encode()
        info.size = len(payload)
        info.mode = 0o644
    elif kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, str(data)
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, str(data)
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    elif kind == "chr":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    else:
        raise ValueError(f"unknown entry kind {kind!r}")
    return info, payload


def layer_bytes(entries: list[Entry]) -> bytes:
    return tar_bytes([entry_info(*entry) for entry in entries])


def open_layer(entries: list[Entry]) -> tarfile.TarFile:
    """A layer as ``ImageArchive.layers()`` yields it: a streaming tar."""
    return tarfile.open(fileobj=io.BytesIO(layer_bytes(entries)), mode="r|")


def write_blobs_first_archive(out: Path, layers: list[Path], config: dict[str, Any], repo_tag: str) -> None:
    """``docker save`` as Docker >= 25 writes it: every blob (the layers uncompressed, so each
    named by its diff_id) under blobs/sha256/ first, then index.json and manifest.json."""
    diff_ids = [f"sha256:{hashlib.sha256(layer.read_bytes()).hexdigest()}" for layer in layers]
    document = {"architecture": "amd64", "os": "linux", **config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_bytes = json.dumps(document).encode()
    config_digest = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d} for d in diff_ids],
    }
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}"
    blobs = {config_digest: config_bytes, manifest_digest: manifest_bytes}
    blobs |= {diff_id: layer.read_bytes() for diff_id, layer in zip(diff_ids, layers, strict=True)}
    index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"], "digest": manifest_digest}]}
    legacy = [{"Config": f"blobs/sha256/{config_digest[7:]}", "RepoTags": [repo_tag], "Layers": []}]
    legacy[0]["Layers"] = [f"blobs/sha256/{diff_id[7:]}" for diff_id in diff_ids]
    members = {f"blobs/sha256/{digest[7:]}": data for digest, data in sorted(blobs.items())}
    members |= {"index.json": json.dumps(index).encode(), "manifest.json": json.dumps(legacy).encode()}
    out.write_bytes(tar_bytes([entry_info(name, "file", data) for name, data in members.items()]))


def make_deep_tree(top: Path, depth: int) -> None:
    """A chain of ``depth`` directories below ``top``, a file at each level, made without recursion."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
