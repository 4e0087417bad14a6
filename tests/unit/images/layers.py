"""Build layer tarballs in memory for tests: one tuple per entry.

Entries belong to the current user; tests of other owners build their ``TarInfo`` by hand.
"""

from __future__ import annotations

import io
import os
import tarfile

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
