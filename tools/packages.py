"""Packages made offline, for tests and benchmarks of deploy-time installs: a pure-Python wheel
written as the zip it is (PEP 427), and an npm tarball as ``npm pack`` lays it out."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

FIXED_MTIME = 1_700_000_000


def write_wheel(directory: Path, name: str, version: str, files: dict[str, bytes], requires: str = "") -> Path:
    """``directory/NAME-VERSION-py3-none-any.whl`` holding ``files``, needing ``requires`` (a
    requirement, e.g. ``other>=1``)."""
    info = f"{name}-{version}.dist-info"
    contents = dict(files)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{info}/METADATA"] = (metadata + (f"Requires-Dist: {requires}\n" if requires else "")).encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    contents[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in contents.items():
            archive.writestr(path, data)
    return wheel


def write_npm_tarball(directory: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> Path:
    """``directory/NAME-VERSION.tgz``: ``package/package.json`` (``manifest``) and ``files``
    under ``package/``, as ``npm pack`` makes it."""
    contents = {"package.json": json.dumps(manifest, indent=2).encode(), **files}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in sorted(contents.items()):
            info = tarfile.TarInfo(f"package/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    tarball = directory / f"{manifest['name'].replace('/', '-').lstrip('@')}-{manifest['version']}.tgz"
    tarball.write_bytes(buffer.getvalue())
    return tarball
