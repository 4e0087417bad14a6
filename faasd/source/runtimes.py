"""Runtimes: an imported image with faasd's wrapper for its language as one more layer.

``runtimes/<name>/2/`` is a version dir as ``faasd.images.store`` makes them: the layer list
(the image's layers, then the wrapper layer), the top layer and the mounted rootfs, on which
deploy-time checks run; ``runtime.json`` beside them records the runtime, and is written last:
a runtime without it is half added, and removed at start-up. The image is first imported alone
as version 1, then composed with the wrapper as version 2, which lists the same layers and one
more, so no byte of the image is copied; version 1 goes once version 2 is in place.

The wrapper comes from ``handlers/runtimes/<language>/`` (standard library only), laid into
``/faas/runtime``, with the mount points one-shot containers bind code and data onto.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.channel import HANDOFF_ENV, NODE_IPC
from faasd.config import Config
from faasd.errors import Conflict, InvalidImage, InvalidRequest, NotFound
from faasd.images.archive import ImageConfig
from faasd.images.layers import fsync_path
from faasd.images.store import LAYER_LIST, ImageStore, ImportedImage, discard, read_layer_list
from faasd.images.unpack import UnpackLimits
from faasd.registry import validate_name
from faasd.source.archive import files_layer, write_archive
from faasd.source.sandbox import Mount, OneShot, RootfsImage

log = logging.getLogger(__name__)

RECORD = "runtime.json"
# The version dirs of a runtime: the image alone, with the wrapper, with the wrapper compiled.
BASE, WRAPPED, COMPOSED = 1, 2, 3
MAX_COMPILED_FILES = 16
MAX_COMPILED_BYTES = 4 << 20
COMPILED = re.compile(r"[A-Za-z0-9_]+\.[A-Za-z0-9_-]+\.pyc")
RUNTIME_DIR = "/faas/runtime"
CODE_DIR = "/faas/code"
DEPS_DIR = "/faas/deps"  # a function's installed dependencies, on its import path
PACKAGES_DIR = "/faas/packages"  # the operator's packages, while a build installs from them
IO_DIR = "/faas/io"  # a run-once's input
JOB_DATA = "/data"  # a job's files (a mount point of a layer of its own: it is outside /faas)
# Mount points one-shot containers bind onto: the rootfs is read-only, runc cannot make them.
MOUNT_POINTS = ("runtime", "code", "deps", "packages", "data", "io")
PROBE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class BuildStep:
    """How a language builds a function at deploy time (``faasd.source.build``)."""

    script: str  # a file of the wrapper that builds, run by the interpreter
    what: str  # what it runs, for messages
    manifests: tuple[str, ...]  # top-level files that ask for an install from the operator's packages
    compiles: tuple[tuple[str, str], ...] = ()  # (suffix of a file that asks for a compile, its output's)

    def installs(self, files: Collection[str]) -> bool:
        return any(manifest in files for manifest in self.manifests)

    def asks(self, files: Collection[str]) -> bool:
        """Whether code of these files is built before it is checked."""
        return self.installs(files) or any(self.runs(name) != name for name in files)

    def runs(self, entry: str) -> str:
        """The file that runs for ``entry``: what it compiles to, or itself."""
        for suffix, output in self.compiles:
            if entry.endswith(suffix) and not entry.endswith(".d" + suffix):
                return entry.removesuffix(suffix) + output
        return entry


@dataclass(frozen=True)
class Language:
    """What a language's wrapper is made of and how it is started."""

    name: str
    interpreter: str
    wrapper: tuple[str, ...]  # files of handlers/runtimes/<name>/, laid into /faas/runtime
    shared: tuple[str, ...]  # files of handlers/ laid beside them (the Python SDK)
    env: tuple[str, ...]
    build: BuildStep | None = None
    bytecode: bool = True  # ``--compile DIR`` writes the wrapper's bytecode into DIR/__pycache__
    forks: bool = True  # its functions may run with --sandbox fork (a template that forks per connection)

    @property
    def command(self) -> tuple[str, ...]:
        return (self.interpreter, f"{RUNTIME_DIR}/{self.wrapper[0]}")

    def wrapper_files(self, handlers: Path) -> dict[str, bytes]:
        """The wrapper layer's files, relative to ``/faas``."""
        files = {f"runtime/{name}": (handlers / "runtimes" / self.name / name).read_bytes() for name in self.wrapper}
        files |= {f"runtime/{name}": (handlers / name).read_bytes() for name in self.shared}
        return files


LANGUAGES = {
    "python": Language(
        "python",
        "python3",
        ("main.py", "runtime.py", "build.py"),
        ("faas_handler.py",),
        # The rootfs is read-only: no bytecode is ever written; print reaches the log at once.
        ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", f"PYTHONPATH={RUNTIME_DIR}"),
        BuildStep("build.py", "pip install", ("requirements.txt",)),
    ),
    # Node takes its connections over its IPC channel (faasd.channel): it reads no fd off a
    # socket of its own. It has no fork(), so no template either; V8 keeps no bytecode on disk.
    "node": Language(
        "node", "node", ("runtime.js",), (), (f"{HANDOFF_ENV}={NODE_IPC}",), None, bytecode=False, forks=False
    ),
}


def language_of(name: str, language: str | None) -> Language:
    """The language of runtime ``name``: ``language`` if given, else the name itself."""
    chosen = language or name
    if chosen not in LANGUAGES:
        known = ", ".join(sorted(LANGUAGES))
        if language is None:
            raise InvalidRequest(f"say which language runtime {name!r} runs with --language ({known})")
        raise InvalidRequest(f"unknown language {language!r}: faasd has wrappers for {known}")
    return LANGUAGES[chosen]


@dataclass(frozen=True)
class Runtime:
    """A runtime as recorded: what functions of it run on."""

    name: str
    language: str
    image: str
    digest: str
    config: ImageConfig
    uid: int
    gid: int
    created: float
    layers: tuple[str, ...]  # diff_ids, bottom first, the wrapper's last

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "language": self.language,
            "image": self.image,
            "digest": self.digest,
            "created": self.created,
            "layers": len(self.layers),
        }


def source_fields(config: ImageConfig) -> dict[str, str]:
    """The runtime and entry of a source function's version, from its environment; {} for an image's."""
    env = dict(item.partition("=")[::2] for item in config.env)
    if "FAAS_RUNTIME" not in env:
        return {}
    return {"runtime": env["FAAS_RUNTIME"], "entry": env.get("FAAS_ENTRY", "")}


class Runtimes:
    """Adds, lists and removes runtimes; their layers live in the functions' layer store."""

    def __init__(self, config: Config, images: ImageStore, oneshot: OneShot) -> None:
        self._config = config
        limits = UnpackLimits(max_bytes=config.max_image_bytes, max_entries=config.max_image_entries)
        self._store = ImageStore(config.runtimes_dir, limits, config.userns_base, layers=images.layers)
        self._oneshot = oneshot
        self._lock = asyncio.Lock()

    def _record_path(self, name: str) -> Path:
        return self._config.runtimes_dir / name / str(COMPOSED) / RECORD

    def all(self) -> list[Runtime]:
        directory = self._config.runtimes_dir
        names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        return [runtime for name in names if (runtime := self._read(name)) is not None]

    def get(self, name: str) -> Runtime:
        runtime = self._read(validate_name(name))
        if runtime is None:
            raise NotFound(f"no runtime named {name!r}: add one with faas runtime add (faas runtime list)")
        return runtime

    def image(self, runtime: Runtime) -> RootfsImage:
        """The runtime's mounted rootfs, to run one-shot containers on."""
        rootfs = self._store.rootfs(runtime.name, COMPOSED)
        return RootfsImage(rootfs, runtime.config, runtime.uid, runtime.gid)

    def _read(self, name: str) -> Runtime | None:
        try:
            data = json.loads(self._record_path(name).read_text())
        except FileNotFoundError:
            return None
        config = ImageConfig.from_json(json.dumps(data.pop("config")))
        layers = tuple(read_layer_list(self._record_path(name).parent / LAYER_LIST))
        return Runtime(config=config, layers=layers, **data)

    def restore(self) -> list[Path]:
        """Remove half-added runtimes and mount the others (at start-up). Blocking."""
        known = {name: {COMPOSED} for name in os.listdir(self._config.runtimes_dir) if self._read(name)}
        removed = self._store.sweep(known)
        self._store.mount_all(known)
        return removed

    def unmount_all(self) -> None:
        self._store.unmount_all()

    async def add(self, name: str, language: str | None, archive: Path, tag: str | None) -> Runtime:
        """Import the image in ``archive`` as runtime ``name``, with the wrapper of its language."""
        validate_name(name)
        lang = language_of(name, language)
        async with self._lock:
            if self._read(name) is not None or (self._config.runtimes_dir / name).exists():
                raise Conflict(f"runtime {name!r} exists: remove it first (faas runtime rm {name})")
            try:
                runtime = await self._import(name, lang, archive, tag)
                await asyncio.to_thread(self._write_record, runtime)
            except BaseException:
                await asyncio.to_thread(self._store.remove_function, name)
                raise
        log.info("runtime added name=%s language=%s layers=%d", name, lang.name, len(runtime.layers))
        return runtime

    async def _import(self, name: str, lang: Language, archive: Path, tag: str | None) -> Runtime:
        """The image as it is, then with the wrapper, which compiles itself there (and so shows that
        the interpreter runs), then with the wrapper and its bytecode: the runtime."""
        base = await asyncio.to_thread(self._store.import_image, archive, name, BASE, tag)
        base_layers = read_layer_list(self._config.runtimes_dir / name / str(BASE) / LAYER_LIST)
        files = lang.wrapper_files(self._config.wrappers_dir)
        env = [*base.config.env, *lang.env, f"FAAS_LANGUAGE={lang.name}"]
        config = {"Cmd": list(lang.command), "Env": env, "WorkingDir": CODE_DIR, "User": base.config.user}
        wrapped = await self._compose(name, WRAPPED, base_layers, files, config)
        image = RootfsImage(self._store.rootfs(name, WRAPPED), wrapped.config, wrapped.uid, wrapped.gid)
        compiled = await self._compile(image, lang)
        imported = await self._compose(name, COMPOSED, base_layers, files | compiled, config)
        for number in (BASE, WRAPPED):
            await asyncio.to_thread(discard, self._config.runtimes_dir / name / str(number))
        return Runtime(
            name=name,
            language=lang.name,
            image=tag or name,
            digest=base.digest,
            config=imported.config,
            uid=imported.uid,
            gid=imported.gid,
            created=time.time(),
            layers=tuple(read_layer_list(self._config.runtimes_dir / name / str(COMPOSED) / LAYER_LIST)),
        )

    async def _compose(
        self, name: str, number: int, base_layers: list[str], files: dict[str, bytes], config: dict[str, Any]
    ) -> ImportedImage:
        """Version ``number`` of runtime ``name``: the image's layers, one of ``files`` under /faas
        and the mount point /data."""
        layers = [files_layer(files, "faas", MOUNT_POINTS), files_layer({}, JOB_DATA.lstrip("/"))]
        with composed_archive(self._config.uploads_dir) as path:
            write_archive(path, base_layers, layers, config, f"faas-runtime/{name}:latest")
            return await asyncio.to_thread(self._store.import_image, path, name, number, None)

    async def _compile(self, image: RootfsImage, lang: Language) -> dict[str, bytes]:
        """The wrapper's bytecode (if its language keeps any), compiled by the runtime's own
        interpreter in a one-shot container; an image without the interpreter (or with one too
        old for the wrapper) is refused here, not at a deploy."""
        owner = (self._config.userns_base + image.uid, self._config.userns_base + image.gid)
        with writable_dir(self._config.bundles_dir, owner) as out:
            finished = await self._oneshot.run(
                image,
                [*lang.command, "--compile", IO_DIR],
                [],
                [Mount(out, IO_DIR, writable=True)],
                self._config.limits,
                PROBE_TIMEOUT_SECONDS,
            )
            if finished.exit_code != 0:
                said = (finished.stderr or finished.stdout).decode(errors="replace").strip()[-500:]
                raise InvalidImage(
                    f"the image cannot run faasd's {lang.name} wrapper with {lang.interpreter!r} "
                    f"(exit {finished.exit_code}): {said or 'no output'}"
                )
            return await asyncio.to_thread(read_compiled, out / "__pycache__") if lang.bytecode else {}

    def _write_record(self, runtime: Runtime) -> None:
        """Write ``runtime.json``: from now on the runtime exists, and survives a crash."""
        path = self._record_path(runtime.name)
        data = {
            "name": runtime.name,
            "language": runtime.language,
            "image": runtime.image,
            "digest": runtime.digest,
            "created": runtime.created,
            "config": json.loads(runtime.config.to_json()),
            "uid": runtime.uid,
            "gid": runtime.gid,
        }
        temp = path.with_suffix(".tmp")
        with open(temp, "w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        temp.rename(path)
        fsync_path(path.parent)

    async def remove(self, name: str, users: Callable[[str], Iterable[str]]) -> Runtime:
        """Remove runtime ``name``, refused while ``users(name)`` names a function on it."""
        runtime = self.get(name)
        async with self._lock:
            using = sorted(set(users(name)))
            if using:
                raise Conflict(
                    f"runtime {name!r} is used by {', '.join(using)}: remove those functions (or their "
                    "versions on it) first"
                )
            await asyncio.to_thread(self._remove, name)
        log.info("runtime removed name=%s", name)
        return runtime

    def _remove(self, name: str) -> None:
        self._record_path(name).unlink(missing_ok=True)
        fsync_path(self._record_path(name).parent)
        self._store.remove_function(name)


@contextlib.contextmanager
def composed_archive(directory: Path) -> Iterator[Path]:
    """A temporary path for an archive faasd writes, removed afterwards."""
    fd, name = tempfile.mkstemp(dir=directory, suffix=".tar")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def writable_dir(parent: Path, owner: tuple[int, int]) -> Iterator[Path]:
    """A fresh directory the container's user (host ids ``owner``) may write, removed afterwards."""
    directory = parent / f"out-{uuid.uuid4().hex[:16]}"
    directory.mkdir(mode=0o700)
    try:
        os.chown(directory, *owner)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def read_compiled(directory: Path) -> dict[str, bytes]:
    """The bytecode files a container wrote into ``directory``, by their place in the wrapper layer.

    What the container wrote is not trusted: only regular files with a bytecode cache's name, a
    few and small, each opened without following a link.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise InvalidImage(f"the wrapper wrote no bytecode: {exc.strerror}") from None
    if len(names) > MAX_COMPILED_FILES or not all(COMPILED.fullmatch(name) for name in names):
        raise InvalidImage(f"the wrapper wrote unexpected files: {', '.join(names)[:200]}")
    files = {}
    for name in names:
        try:
            fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:  # a link (ELOOP), or gone
            raise InvalidImage(f"the wrapper's {name} cannot be read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidImage(f"the wrapper's {name} is not a regular file")
            files[f"runtime/__pycache__/{name}"] = file.read(MAX_COMPILED_BYTES + 1)
    if sum(len(data) for data in files.values()) > MAX_COMPILED_BYTES:
        raise InvalidImage("the wrapper's bytecode is over its size limit")
    return files
