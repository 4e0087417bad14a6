"""Image archives faasd writes itself: layers it holds, left out, plus small layers it makes.

The archive is the legacy ``docker save`` layout that ``faasd.images.archive`` reads. Each layer
the store holds is a member left out (``faasd.images.thin.omitted_marker``) that names its
diff_id, so composing a version on top of a runtime copies none of the runtime's bytes; the new
layers (faasd's wrapper, a function's code) are small tars built here, byte for byte the same
for the same files, so the same code gives the same diff_id and is stored once.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from faasd.images.thin import omitted_marker

FIXED_MTIME = 1_700_000_000
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def files_layer(files: Mapping[str, bytes], root: str, directories: Iterable[str] = ()) -> bytes:
    """A layer tar holding ``files`` (relative paths) under ``root``, with their parent dirs and
    the empty ``directories`` (relative too).

    Owned by root, world-readable, fixed mtimes, sorted: the same files give the same bytes.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_files(tar, files, root, directories)
    return buffer.getvalue()


def add_files(
    tar: tarfile.TarFile, files: Mapping[str, bytes], root: str, directories: Iterable[str] = ()
) -> dict[str, bool]:
    """Add ``files`` and ``directories`` under ``root`` to ``tar`` as ``files_layer`` lays them
    out; the names added, true for a directory."""
    directories = {root, *(f"{root}/{name}" for name in directories)}
    for name in files:
        parts = name.split("/")[:-1]
        directories.update("/".join([root, *parts[: depth + 1]]) for depth in range(len(parts)))
    for directory in sorted(directories):
        tar.addfile(_info(directory, tarfile.DIRTYPE, 0o755))
    for name in sorted(files):
        data = files[name]
        info = _info(f"{root}/{name}", tarfile.REGTYPE, 0o644)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return dict.fromkeys(directories, True) | {f"{root}/{name}": False for name in files}


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, FIXED_MTIME
    return info


def diff_id(layer: bytes | BinaryIO) -> str:
    """The layer's digest; a layer in a file is read from its start."""
    if isinstance(layer, bytes):
        return f"sha256:{hashlib.sha256(layer).hexdigest()}"
    layer.seek(0)
    return f"sha256:{hashlib.file_digest(layer, 'sha256').hexdigest()}"  # type: ignore[arg-type]


def image_config(config: Mapping[str, Any], diff_ids: list[str]) -> dict[str, Any]:
    """An image config (image-spec config.md) for this machine around ``config`` (Cmd, Env...)."""
    machine = platform.machine()
    return {
        "architecture": ARCHITECTURES.get(machine, machine),
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def write_archive(
    out: Path, held: list[str], layers: Sequence[bytes | BinaryIO], config: Mapping[str, Any], tag: str
) -> None:
    """Write an image of the layers ``held`` (by diff_id, left out) and then ``layers`` (bytes, or
    a file: one a build made may be large), bottom first. Blocking."""
    diff_ids = [*held, *(diff_id(layer) for layer in layers)]
    config_bytes = json.dumps(image_config(config, diff_ids), sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    names = [f"{number}/layer.tar" for number in range(1, len(diff_ids) + 1)]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    with open(out, "wb") as file:
        # The metadata first, as faas sends it: a reader of the stream then knows every layer.
        file.write(_member("manifest.json", manifest))
        file.write(_member(config_name, config_bytes))
        for name, held_id in zip(names, held, strict=False):
            file.write(omitted_marker(name, held_id))
        for name, layer in zip(names[len(held) :], layers, strict=True):
            if isinstance(layer, bytes):
                file.write(_member(name, layer))
            else:
                _copy_member(file, name, layer)
        file.write(bytes(2 * tarfile.BLOCKSIZE))  # the end of the archive


def _member(name: str, data: bytes) -> bytes:
    info = _info(name, tarfile.REGTYPE, 0o644)
    info.size = len(data)
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _copy_member(out: BinaryIO, name: str, layer: BinaryIO) -> None:
    size = layer.seek(0, io.SEEK_END)
    layer.seek(0)
    info = _info(name, tarfile.REGTYPE, 0o644)
    info.size = size
    out.write(info.tobuf(tarfile.PAX_FORMAT))
    shutil.copyfileobj(layer, out)
    out.write(bytes(-size % tarfile.BLOCKSIZE))
