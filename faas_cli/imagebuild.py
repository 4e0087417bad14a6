"""Build image tarballs offline, without Docker, as genuine ``docker save`` (or OCI) archives.

``build_python_image`` (``faas build DIR -o FILE``): a Debian bookworm base with python3 (made
once with mmdebstrap, about 30 s, then cached) plus an app layer: /app with the SDK
(handlers/faas_handler.py) and the files of the app dir (its app.py is the entry point) less
archives and the output itself, and the PyPI packages (``packages`` and the app dir's
requirements.txt) installed for the image's Python 3.11 from wheels cached under the cache dir,
so a rebuild needs no network. Layers get fixed owners and mtimes, so the same input gives the
same digests. ``tools/build_image.py`` adds the busybox images the tests use.
"""

from __future__ import annotations

import fnmatch
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
CREATED = "2023-11-14T22:13:20Z"
FIXED_MTIME = 1_700_000_000  # CREATED as a Unix time
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bookworm's python3 is 3.11; it looks for locally installed packages in /usr/local.
IMAGE_PYTHON = (3, 11)
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"


# The merged-usr hook sets up /bin -> usr/bin itself; without it apt pulls in usrmerge, and perl
# with it (about 50 MB). Docs, man pages and translations are left out as in Docker's slim images.
def mmdebstrap_argv(include: str) -> list[str]:
    """The mmdebstrap command of a Debian bookworm minbase with the packages ``include`` (comma-separated)."""
    return [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        f"--include={include}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        *(f"--dpkgopt=path-exclude=/usr/share/{part}/*" for part in ("doc", "man", "info", "locale")),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "bookworm",
    ]


MMDEBSTRAP = mmdebstrap_argv("python3")  # python3-minimal lacks http and wsgiref, which faas_handler needs
# Node's runtime: the interpreter, and the TypeScript compiler and npm that deploys run in it.
MMDEBSTRAP_NODE = mmdebstrap_argv("nodejs,node-typescript,npm")
# Media types from the OCI image-spec (media-types.md).
# Left out of an app dir's layer: archives (a previous output among them) are no part of an app,
# and bytecode is compiled anew for the image's python.
LEFT_OUT = ("*.tar", "*.tar.gz", "*.tgz", "*.tar.xz", "*.tar.zst", "*.zip", "__pycache__", "*.pyc", ".git")
Say = Callable[[str], None]
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
            add_dir(tar, chain_id)
            add_bytes(tar, f"{chain_id}/VERSION", b"1.0")
            add_bytes(tar, f"{chain_id}/json", _json(v1))
            tar.add(layer, arcname=f"{chain_id}/layer.tar", recursive=False, filter=normalize)
            layer_names.append(f"{chain_id}/layer.tar")
            top = chain_id
        config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
        add_bytes(tar, config_name, config_bytes)
        add_bytes(tar, "manifest.json", _json([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]))
        name, _, tag = repo_tag.rpartition(":")
        add_bytes(tar, "repositories", _json({name: {tag: top}}))


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
            add_bytes(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
            add_bytes(tar, "index.json", _json(index))
            add_dir(tar, "blobs")
            add_dir(tar, "blobs/sha256")
            for data in (config_bytes, manifest_bytes):
                add_bytes(tar, f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)
            for descriptor in descriptors:
                hex_digest = descriptor["digest"].removeprefix("sha256:")
                tar.add(Path(tmp) / hex_digest, arcname=f"blobs/sha256/{hex_digest}", filter=normalize)


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def debian_python_base(cache_dir: Path, say: Say = to_stderr, include: Sequence[str] = ()) -> Path:
    """Debian bookworm (minbase) with python3, and the Debian packages ``include``, as one layer
    tar: built once, then reused."""
    return debian_base(cache_dir, "python", [*MMDEBSTRAP, *(f"--include={package}" for package in include)], say)


def debian_node_base(cache_dir: Path, say: Say = to_stderr) -> Path:
    """Debian bookworm (minbase) with nodejs, node-typescript and npm as one layer tar: built once, then reused."""
    return debian_base(cache_dir, "node", MMDEBSTRAP_NODE, say)


def debian_base(cache_dir: Path, kind: str, argv: Sequence[str], say: Say = to_stderr) -> Path:
    """The layer tar ``argv`` (an mmdebstrap command, less its output) makes: built once, then reused.

    The file name carries a digest of the command, so changing the recipe rebuilds.
    """
    recipe = hashlib.sha256(" ".join(argv).encode()).hexdigest()[:12]
    base = cache_dir / f"debian-{kind}-base-{recipe}.tar"
    if base.exists():
        say(f"base: {base} (cached)")
        return base
    if shutil.which(argv[0]) is None:
        raise BuildError("mmdebstrap is missing: apt-get install mmdebstrap")
    cache_dir.mkdir(parents=True, exist_ok=True)
    say(f"base: building {base} with mmdebstrap (once; about 30 s)")
    # mmdebstrap picks the output format from the name: the temporary name ends in .tar too.
    partial = cache_dir / f".{base.stem}.{os.getpid()}.tar"
    try:
        run([*argv, str(partial)])
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
    say: Say = lambda _: None,
) -> None:
    """The Debian python3 base, then one app layer; tag ``python-<app dir name>``, Cmd ``python3 /app/app.py``.

    The layer holds /app (the SDK and the files of ``app_dir``, less ``LEFT_OUT`` and ``out``)
    and, in the image's site directory, ``packages`` and ``app_dir/requirements.txt`` installed
    from PyPI wheels. Every module is compiled at build time: the rootfs is read-only, so the
    image could never cache its own bytecode and each container would compile its imports anew.
    ``say`` hears what comes from the cache and what is left out.
    """
    sdk = HANDLERS / "faas_handler.py"
    if not sdk.is_file():
        raise BuildError(f"the SDK {sdk} is missing: faas builds from the faasd checkout it is installed from")
    base = debian_python_base(cache_dir, say)
    requirements = [*packages]
    if (app_dir / "requirements.txt").is_file():
        requirements += ["-r", str(app_dir / "requirements.txt")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(app_dir, root / "app", ignore=_left_out(out, say))
        shutil.copy(sdk, root / "app" / "faas_handler.py")
        python = _image_python()
        if requirements:
            say(f"wheels: {cache_dir / 'wheels'} (PyPI only for what is not there)")
            _pip_install(python, requirements, cache_dir / "wheels", root / SITE_PACKAGES)
        _compile(python, root)
        layer = Path(tmp) / "app.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False, filter=normalize)
        config = {
            "config": {
                "Cmd": ["python3", "/app/app.py"],
                # The rootfs is read-only: no point trying to write .pyc files.
                "Env": [DEFAULT_PATH, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
                "WorkingDir": "/app",
            }
        }
        write_image(out, [base, layer], config, f"python-{app_dir.name}:latest", oci)


def _left_out(out: Path, say: Say) -> Callable[[str, list[str]], set[str]]:
    """``copytree``'s ignore: what of an app dir stays out of its layer (``say`` is told, but
    for bytecode, which is always compiled anew)."""
    output = out.resolve()

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set()
        for name in names:
            path = Path(directory, name)
            if path.resolve() == output or any(fnmatch.fnmatch(name, pattern) for pattern in LEFT_OUT):
                skipped.add(name)
                if not (name == "__pycache__" or name.endswith(".pyc")):
                    say(f"left out: {path}" + (" (the output)" if path.resolve() == output else ""))
        return skipped

    return ignore


def write_image(out: Path, layers: list[Path], config: dict[str, Any], tag: str, oci: bool) -> None:
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
        run(install)
    except BuildError:  # something is not cached yet
        wheels.mkdir(parents=True, exist_ok=True)
        download = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        try:
            run([*download, "--only-binary=:all:", "--dest", str(wheels), *requirements])
        except BuildError as exc:
            wanted = " ".join(requirements)
            raise BuildError(f"cannot get wheels of {wanted} from PyPI or {wheels}: {exc}") from exc
        run(install)
    shutil.rmtree(target / "bin", ignore_errors=True)  # entry-point scripts name this host's python


def _compile(python: str, root: Path) -> None:
    """Compile every module under ``root`` to bytecode checked by the source's hash (PEP 552):
    valid whatever mtimes the layer gives the files, and recorded under the image's paths."""
    image_paths = ["-s", str(root), "-p", "/"]  # strip the staging dir, prepend /
    run([python, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", *image_paths, str(root)])


def run(argv: list[str]) -> str:
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


def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner root and a fixed mtime: what goes into a layer does not depend on the build host."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = FIXED_MTIME
    return info


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = normalize(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = normalize(tarfile.TarInfo(name))
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = normalize(tarfile.TarInfo(name))
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)
