"""Build layer tarballs in memory for tests: one tuple per entry."""

from __future__ import annotations

import io
import tarfile

# (name, kind, data): kind is "file", "dir", "symlink", "hardlink", "fifo", "chr"
Entry = tuple[str, str, str | bytes]


def layer_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
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
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def open_layer(entries: list[Entry]) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(layer_bytes(entries)), mode="r|")
