"""Build image tarballs offline, without Docker, as genuine ``docker save`` (or OCI) archives.

    python -m tools.build_image busybox OUT.tar [--body TEXT] [--prelude SHELL] [--oci]
    python -m tools.build_image python OUT.tar [--app DIR] [--package REQ ...] [--cache DIR] [--oci]
    python -m tools.build_image runtime python OUT.tar [--cache DIR] [--oci]

``busybox``: Debian's static busybox plus the static C handler (handlers/c/hello.c), one layer;
builds in about a second. ``python``: a Debian bookworm base with python3 (made once with
mmdebstrap, about 30 s, then cached) plus an app layer: /app with handlers/faas_handler.py and
every file of the app dir (default handlers/hello; its app.py is the entry point), and the PyPI
packages (``--package`` and the app dir's requirements.txt) installed for the image's Python 3.11
from wheels cached under the cache dir, so a rebuild needs no network. Layers get fixed owners
and mtimes, so the same input gives the same digests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
BUSYBOX = Path("/bin/busybox")
CREATED = "2023-11-14T22:13:20Z"
FIXED_MTIME = 1_700_000_000  # CREATED as a Unix time
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bookworm's python3 is 3.11; it looks for locally installed packages in /usr/local.
IMAGE_PYTHON = (3, 11)
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# The merged-usr hook sets up /bin -> usr/bin itself; without it apt pulls in usrmerge, and perl
# with it (about 50 MB). Docs, man pages and translations are left out as in Docker's slim images.
MMDEBSTRAP = [
    "mmdebstrap",
    "--quiet",
    "--variant=minbase",
    "--include=python3",  # python3-minimal lacks http and wsgiref, which faas_handler needs
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    *(f"--dpkgopt=path-exclude=/usr/share/{part}/*" for part in ("doc", "man", "info", "locale")),
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "bookworm",
]
# Media types from the OCI image-spec (media-types.md).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class BuildError(Exception):
    """Something the build needs is missing or failed; the message says what to do."""


def write_docker_archive(out: Path, layers: list[Path], config: dict[str, Any], repo_tag: str) -> None:
    """Write the legacy ``docker save`` layout, as Docker before 25 writes it.

    ``layers`` are uncompressed layer tars, bottom first; ``config`` holds at least the ``config``
    object (Entrypoint, Cmd, Env, WorkingDir, User), and any other image config keys to keep.
    Each layer is read twice (digest, copy) and never held in memory.
    """
    document = _image_config(layers, config)
    config_bytes = _json(document)
    top = ""
    with _atomic(out) as target, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        layer_names = []
        for chain_id, layer in zip(_chain_ids(document["rootfs"]["diff_ids"]), layers, strict=True):
            # Docker names each directory by a v1 ID derived from the chain; the ChainID serves.
            v1 = {"id": chain_id, **({"parent": top} if top else {}), "created": CREATED, "os": "linux"}
            _add_dir(tar, chain_id)
            _add_bytes(tar, f"{chain_id}/VERSION", b"1.0")
            _add_bytes(tar, f"{chain_id}/json", _json(v1))
            tar.add(layer, arcname=f"{chain_id}/layer.tar", recursive=False, filter=_normalize)
            layer_names.append(f"{chain_id}/layer.tar")
            top = chain_id
        config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
        _add_bytes(tar, config_name, config_bytes)
        _add_bytes(
            tar, "manifest.json", _json([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}])
        )
        name, _, tag = repo_tag.rpartition(":")
        _add_bytes(tar, "repositories", _json({name: {tag: top}}))


def write_oci_archive(out: Path, layers: list[Path], config: dict[str, Any], ref_name: str) -> None:
    """Write an OCI image layout with gzip layers, as ``podman save --format oci-archive`` does."""
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = [_gzip_blob(layer, Path(tmp)) for layer in layers]
        config_bytes = _json(_image_config(layers, config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config_bytes),
            "layers": descriptors,
        }
        manifest_bytes = _json(manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    **_descriptor(OCI_MANIFEST, manifest_bytes),
                    "annotations": {"org.opencontainers.image.ref.name": ref_name},
                }
            ],
        }
        with _atomic(out) as target, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(tar, "index.json", _json(index))
            _add_dir(tar, "blobs")
            _add_dir(tar, "blobs/sha256")
            for data in (config_bytes, manifest_bytes):
                _add_bytes(tar, f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)
            for descriptor in descriptors:
                hex_digest = descriptor["digest"].removeprefix("sha256:")
                tar.add(Path(tmp) / hex_digest, arcname=f"blobs/sha256/{hex_digest}", filter=_normalize)


def build_busybox_image(out: Path, body: str | None = None, oci: bool = False, prelude: str | None = None) -> None:
    """Busybox and the static C handler in one layer; Cmd ``/bin/hello [BODY]``, tag busybox-hello.

    With ``prelude``, busybox sh runs those commands first (to print to stdout or stderr, say)
    and then execs the handler.
    """
    if not BUSYBOX.is_file():
        raise BuildError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    applets = _run([str(BUSYBOX), "--list-full"]).split()
    with tempfile.TemporaryDirectory() as tmp:
        hello = _compile_hello(Path(tmp))
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "dev", "sys"):
                _add_dir(tar, directory)
            _add_dir(tar, "tmp", 0o1777)
            tar.add(BUSYBOX, arcname="bin/busybox", filter=_normalize)
            tar.add(hello, arcname="bin/hello", filter=_normalize)
            for applet in applets:  # at their usual paths, so /usr/bin/env and /sbin/ip work too
                if "/" in applet and applet != "bin/busybox":
                    _add_symlink(tar, applet, "/bin/busybox")
            _add_bytes(tar, "etc/passwd", PASSWD.encode())
            _add_bytes(tar, "etc/group", GROUP.encode())
        cmd = ["/bin/hello"] if body is None else ["/bin/hello", body]
        if prelude is not None:
            cmd = ["/bin/sh", "-c", f'{prelude}\nexec "$@"', "sh", *cmd]
        config = {"config": {"Cmd": cmd, "Env": [DEFAULT_PATH], "WorkingDir": "/"}}
        _write(out, [layer], config, "busybox-hello:latest", oci)


def debian_python_base(cache_dir: Path) -> Path:
    """Debian bookworm (minbase) with python3 as one layer tar: built once, then reused.

    The file name carries a digest of the mmdebstrap command, so changing the recipe rebuilds.
    """
    recipe = hashlib.sha256(" ".join(MMDEBSTRAP).encode()).hexdigest()[:12]
    base = cache_dir / f"debian-python-base-{recipe}.tar"
    if base.exists():
        return base
    if shutil.which(MMDEBSTRAP[0]) is None:
        raise BuildError("mmdebstrap is missing: apt-get install mmdebstrap")
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"build_image: building {base} with mmdebstrap (once; about 30 s)", file=sys.stderr)
    # mmdebstrap picks the output format from the name: the temporary name ends in .tar too.
    partial = cache_dir / f".{base.stem}.{os.getpid()}.tar"
    try:
        _run([*MMDEBSTRAP, str(partial)])
        partial.rename(base)  # atomic: a reader sees no base or a whole one
    finally:
        partial.unlink(missing_ok=True)
    return base


def build_python_image(
    out: Path,
    cache_dir: Path,
    app_dir: Path = HANDLERS / "hello",
    packages: Sequence[str] = (),
    oci: bool = False,
) -> None:
    """The Debian python3 base, then one app layer; tag ``python-<app dir name>``, Cmd ``python3 /app/app.py``.

    The layer holds /app (the SDK and every file of ``app_dir``) and, in the image's site
    directory, ``packages`` and ``app_dir/requirements.txt`` installed from PyPI wheels. Every
    module is compiled at build time: the rootfs is read-only, so the image could never cache
    its own bytecode and each container would compile its imports anew.
    """
    base = debian_python_base(cache_dir)
    requirements = [*packages]
    if (app_dir / "requirements.txt").is_file():
        requirements += ["-r", str(app_dir / "requirements.txt")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(app_dir, root / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(HANDLERS / "faas_handler.py", root / "app" / "faas_handler.py")
        python = _image_python()
        if requirements:
            _pip_install(python, requirements, cache_dir / "wheels", root / SITE_PACKAGES)
        _compile(python, root)
        layer = Path(tmp) / "app.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False, filter=_normalize)
        config = {
            "config": {
                "Cmd": ["python3", "/app/app.py"],
                # The rootfs is read-only: no point trying to write .pyc files.
                "Env": [DEFAULT_PATH, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
                "WorkingDir": "/app",
            }
        }
        _write(out, [base, layer], config, f"python-{app_dir.name}:latest", oci)


def build_runtime_image(out: Path, language: str, cache_dir: Path, oci: bool = False) -> None:
    """A runtime image: the Debian base with the language's interpreter, nothing else; tag ``<language>-runtime``.

    ``faas runtime add`` lays faasd's wrapper on it; the base is the one the python images use.
    """
    if language != "python":
        raise BuildError(f"no runtime recipe for {language!r}: python")
    base = debian_python_base(cache_dir)
    config = {"config": {"Cmd": ["python3"], "Env": [DEFAULT_PATH]}}
    _write(out, [base], config, f"{language}-runtime:latest", oci)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.build_image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    busybox = kinds.add_parser("busybox", help="busybox and the static C handler")
    busybox.add_argument("--body", help="what the C handler answers (default: hello from C)")
    busybox.add_argument("--prelude", help="shell commands run before the handler, e.g. 'echo started >&2'")
    python = kinds.add_parser("python", help="Debian python3, the SDK and a Python handler")
    python.add_argument("--app", type=Path, default=HANDLERS / "hello", help="the app dir; its app.py runs")
    python.add_argument(
        "--package", action="append", default=[], help="a requirement to install from PyPI (repeatable)"
    )
    python.add_argument(
        "--cache", type=Path, default=Path("/var/cache/faasd"), help="where the base layer and wheels are kept"
    )
    runtime = kinds.add_parser("runtime", help="a runtime image for faas runtime add: Debian and an interpreter")
    runtime.add_argument("language", choices=["python"], help="the interpreter's language")
    runtime.add_argument("--cache", type=Path, default=Path("/var/cache/faasd"), help="where the base layer is kept")
    for kind in (busybox, python, runtime):
        kind.add_argument("out", type=Path, help="the image tarball to write")
        kind.add_argument("--oci", action="store_true", help="write an OCI layout instead of docker save's")
    options = parser.parse_args(argv)
    try:
        if options.kind == "busybox":
            build_busybox_image(options.out, options.body, options.oci, options.prelude)
        elif options.kind == "runtime":
            build_runtime_image(options.out, options.language, options.cache, options.oci)
        else:
            build_python_image(options.out, options.cache, options.app, options.package, options.oci)
    except BuildError as exc:
        print(f"build_image: {exc}", file=sys.stderr)
        return 1
    print(f"{options.out} ({options.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _write(out: Path, layers: list[Path], config: dict[str, Any], tag: str, oci: bool) -> None:
    (write_oci_archive if oci else write_docker_archive)(out, layers, config, tag)


def _image_config(layers: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """A whole image config (image-spec config.md) around the caller's keys; rootfs is computed."""
    machine = platform.machine()
    return {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
        "os": "linux",
        "created": CREATED,
        "history": [{"created": CREATED, "created_by": "tools/build_image.py"} for _ in layers],
        **config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha256_file(layer)}" for layer in layers]},
    }


def _chain_ids(diff_ids: list[str]) -> Iterator[str]:
    """Hex ChainIDs (image-spec config.md: ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)))."""
    chain = ""
    for diff_id in diff_ids:
        chain = diff_id if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        yield chain.removeprefix("sha256:")


def _gzip_blob(layer: Path, blobs: Path) -> dict[str, Any]:
    """Compress ``layer`` into ``blobs`` under its digest; return its descriptor."""
    partial = blobs / "partial"
    with open(layer, "rb") as source, open(partial, "wb") as raw:
        # No name and mtime 0 in the gzip header: the same layer gives the same blob digest.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as target:
            shutil.copyfileobj(source, target, 1 << 20)
    digest = _sha256_file(partial)
    partial.rename(blobs / digest)
    return {"mediaType": OCI_LAYER_GZIP, "digest": f"sha256:{digest}", "size": (blobs / digest).stat().st_size}


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}", "size": len(data)}


def _compile_hello(directory: Path) -> Path:
    if shutil.which("gcc") is None:
        raise BuildError("gcc is missing: apt-get install gcc libc6-dev")
    binary = directory / "hello"
    _run(["gcc", "-static", "-Os", "-o", str(binary), str(HANDLERS / "c" / "hello.c")])
    return binary


def _image_python() -> str:
    """An interpreter of the image's Python version, to install wheels and compile for it."""
    if sys.version_info[:2] == IMAGE_PYTHON:
        return sys.executable
    name = "python{}.{}".format(*IMAGE_PYTHON)
    found = shutil.which(name)
    if found is None:
        raise BuildError(f"{name} is missing, and the image's modules are compiled with it: apt-get install {name}")
    return found


def _pip_install(python: str, requirements: list[str], wheels: Path, target: Path) -> None:
    """Install ``requirements`` into ``target`` from the wheels in ``wheels``, downloading only
    what is missing there. Wheels only: a source build would run the package's code here."""
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    install += ["--no-compile", "--no-index", "--find-links", str(wheels), "--target", str(target), *requirements]
    try:
        _run(install)
    except BuildError:  # something is not cached yet
        wheels.mkdir(parents=True, exist_ok=True)
        download = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        try:
            _run([*download, "--only-binary=:all:", "--dest", str(wheels), *requirements])
        except BuildError as exc:
            wanted = " ".join(requirements)
            raise BuildError(f"cannot get wheels of {wanted} from PyPI or {wheels}: {exc}") from exc
        _run(install)
    shutil.rmtree(target / "bin", ignore_errors=True)  # entry-point scripts name this host's python


def _compile(python: str, root: Path) -> None:
    """Compile every module under ``root`` to bytecode checked by the source's hash (PEP 552):
    valid whatever mtimes the layer gives the files, and recorded under the image's paths."""
    image_paths = ["-s", str(root), "-p", "/"]  # strip the staging dir, prepend /
    _run([python, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", *image_paths, str(root)])


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{argv[0]} failed with status {exc.returncode}:\n{exc.stderr.strip()}") from exc


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out``, renamed onto it only when the block succeeds."""
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        yield partial
        partial.rename(out)
    finally:
        partial.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner root and a fixed mtime: what goes into a layer does not depend on the build host."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = FIXED_MTIME
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _normalize(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = _normalize(tarfile.TarInfo(name))
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = _normalize(tarfile.TarInfo(name))
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)


if __name__ == "__main__":
    sys.exit(main())
