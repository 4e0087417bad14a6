"""Build image tarballs offline, as genuine ``docker save`` (or OCI) archives, without Docker.

    python -m tools.build_image busybox OUT.tar [--body TEXT] [--oci]
    python -m tools.build_image python OUT.tar [--cache DIR] [--oci]

``busybox``: a static busybox plus the static C handler (handlers/c/hello.c); builds in about a
second. ``python``: a Debian bookworm base with python3 (made once by mmdebstrap and cached),
plus an app layer holding handlers/faas_handler.py and handlers/hello/app.py.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
BUSYBOX = Path("/bin/busybox")
FIXED_MTIME = 1_700_000_000  # app layers are reproducible: same input, same digest
BASE_NAME = "debian-bookworm-python3.tar"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def image_config(layers: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """A complete image config (image-spec config.md) around ``config``'s ``config`` object."""
    return {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        **config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256_file(layer)}" for layer in layers]},
        "history": [{"created_by": "tools/build_image.py"} for _ in layers],
    }


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = FIXED_MTIME
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = FIXED_MTIME
    tar.addfile(info)


def write_docker_archive(out: Path, layers: list[Path], config: dict[str, Any], repo_tag: str) -> None:
    """Write the legacy ``docker save`` layout, as Docker before 25 does.

    ``layers`` are uncompressed layer tars; ``config`` holds at least the ``config`` object
    (Entrypoint, Cmd, Env, ...). Layers are streamed, never read into memory.
    """
    document = image_config(layers, config)
    config_bytes = json.dumps(document).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    layer_names = []
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        parent = ""
        for diff_id, layer in zip(document["rootfs"]["diff_ids"], layers, strict=True):
            layer_id = hashlib.sha256(f"{parent}{diff_id}".encode()).hexdigest()
            _add_dir(tar, layer_id)
            _add_bytes(tar, f"{layer_id}/VERSION", b"1.0")
            _add_bytes(tar, f"{layer_id}/json", json.dumps({"id": layer_id, "parent": parent or None}).encode())
            tar.add(layer, arcname=f"{layer_id}/layer.tar", recursive=False)
            layer_names.append(f"{layer_id}/layer.tar")
            parent = layer_id
        _add_bytes(tar, f"{config_id}.json", config_bytes)
        manifest = [{"Config": f"{config_id}.json", "RepoTags": [repo_tag], "Layers": layer_names}]
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        name, _, tag = repo_tag.rpartition(":")
        _add_bytes(tar, "repositories", json.dumps({name: {tag: parent}}).encode())


def write_oci_archive(out: Path, layers: list[Path], config: dict[str, Any], ref_name: str) -> None:
    """Write an OCI image layout with gzip layers, as ``podman save --format oci-archive`` does."""
    with tempfile.TemporaryDirectory() as tmp:
        blobs = Path(tmp)
        descriptors = []
        for layer in layers:
            compressed = blobs / "layer.gz"
            with open(layer, "rb") as source, gzip.GzipFile(compressed, "wb", mtime=0) as target:
                shutil.copyfileobj(source, target, 1 << 20)
            digest = sha256_file(compressed)
            compressed.rename(blobs / digest)
            descriptors.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{digest}",
                    "size": (blobs / digest).stat().st_size,
                }
            )
        config_bytes = json.dumps(image_config(layers, config)).encode()
        manifest_bytes = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{hashlib.sha256(config_bytes).hexdigest()}",
                    "size": len(config_bytes),
                },
                "layers": descriptors,
            }
        ).encode()
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}",
                    "size": len(manifest_bytes),
                    "annotations": {"org.opencontainers.image.ref.name": ref_name},
                }
            ],
        }
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            _add_bytes(tar, "index.json", json.dumps(index).encode())
            _add_dir(tar, "blobs")
            _add_dir(tar, "blobs/sha256")
            for data in (config_bytes, manifest_bytes):
                _add_bytes(tar, f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)
            for descriptor in descriptors:
                hex_digest = descriptor["digest"].removeprefix("sha256:")
                tar.add(blobs / hex_digest, arcname=f"blobs/sha256/{hex_digest}", recursive=False)


def write_archive(out: Path, layers: list[Path], config: dict[str, Any], tag: str, oci: bool) -> None:
    (write_oci_archive if oci else write_docker_archive)(out, layers, config, tag)


@contextmanager
def _layer_file() -> Iterator[tuple[Path, tarfile.TarFile]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            yield path, tar


def build_busybox_image(out: Path, body: str | None = None, oci: bool = False) -> None:
    """A static busybox and the static C handler; Cmd is ``/bin/hello [BODY]``."""
    if not BUSYBOX.exists():
        raise SystemExit("build_image: /bin/busybox is missing: apt-get install busybox-static")
    with tempfile.TemporaryDirectory() as tmp:
        hello = Path(tmp) / "hello"
        subprocess.run(["gcc", "-static", "-Os", "-o", str(hello), str(HANDLERS / "c" / "hello.c")], check=True)
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
        with _layer_file() as (layer, tar):
            for directory in ("bin", "etc", "tmp", "proc", "dev", "sys"):
                _add_dir(tar, directory)
            tar.add(BUSYBOX, arcname="bin/busybox")
            tar.add(hello, arcname="bin/hello")
            for applet in applets:
                if applet != "busybox":
                    link = tarfile.TarInfo(f"bin/{applet}")
                    link.type = tarfile.SYMTYPE
                    link.linkname = "busybox"
                    tar.addfile(link)
            _add_bytes(tar, "etc/passwd", PASSWD.encode())
            _add_bytes(tar, "etc/group", GROUP.encode())
            tar.close()
            cmd = ["/bin/hello"] + ([body] if body is not None else [])
            write_archive(out, [layer], {"config": {"Cmd": cmd, "Env": [DEFAULT_PATH]}}, "busybox-hello:latest", oci)


def debian_python_base(cache_dir: Path) -> Path:
    """Debian bookworm (minbase) with python3, as one layer tar; built once, then cached."""
    base = cache_dir / BASE_NAME
    if not base.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # mmdebstrap picks its output format from the name, so the temp name ends in .tar too.
        partial = cache_dir / f".partial-{os.getpid()}.tar"
        try:
            subprocess.run(
                ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3", "bookworm", str(partial)],
                check=True,
            )
            partial.rename(base)
        finally:
            partial.unlink(missing_ok=True)
    return base


def build_python_image(out: Path, cache_dir: Path, app_dir: Path = HANDLERS / "hello", oci: bool = False) -> None:
    """The example Python handler: Debian + python3, then /app with the SDK and ``app.py``."""
    base = debian_python_base(cache_dir)
    with _layer_file() as (layer, tar):
        _add_dir(tar, "app")
        _add_bytes(tar, "app/faas_handler.py", (HANDLERS / "faas_handler.py").read_bytes())
        _add_bytes(tar, "app/app.py", (app_dir / "app.py").read_bytes())
        tar.close()
        config = {
            "config": {
                "Cmd": ["python3", "/app/app.py"],
                "Env": [DEFAULT_PATH, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
                "WorkingDir": "/app",
            }
        }
        write_archive(out, [base, layer], config, "python-hello:latest", oci)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["busybox", "python"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--body", help="busybox: the text the C handler answers with")
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/faasd"), help="python: where the base is kept")
    parser.add_argument("--oci", action="store_true", help="write an OCI layout instead of docker save's")
    options = parser.parse_args()
    if options.kind == "busybox":
        build_busybox_image(options.out, options.body, options.oci)
    else:
        build_python_image(options.out, options.cache, oci=options.oci)


if __name__ == "__main__":
    main()
