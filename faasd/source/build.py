"""Deploy-time builds: dependencies installed, TypeScript compiled, in a one-shot container of the runtime.

A function whose files ask for a build (its language's ``BuildStep``: a ``requirements.txt`` for
Python; a ``package.json`` or a ``.ts`` file for Node) is built before it is checked: the
runtime's build script (``handlers/runtimes/<language>/build.*``) runs in a one-shot container
with the code bound read-only at ``/faas/code``, the operator's package directory (``faasd
--packages``) read-only at ``/faas/packages`` when it installs, and a tmpfs of ``--max-deps-size``
at ``/faas/deps`` to work in; it has no network, so every package comes from that directory. It
writes what it made to stdout as a tar of members under ``code/`` (node_modules, compiled .js)
and ``deps/`` (pip's tree); faasd keeps at most twice that size of it, checks every member
before anything is unpacked, and lays it into the function's code layer beside the code, whose
own files it may not replace. Nothing of a build runs on the host, and a failed one leaves
nothing: its installer's or compiler's last lines are the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tarfile
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from faasd.config import Config
from faasd.errors import InvalidCode, InvalidRequest
from faasd.limits import Limits
from faasd.source.archive import FIXED_MTIME, add_files
from faasd.source.runtimes import CODE_DIR, DEPS_DIR, PACKAGES_DIR, RUNTIME_DIR, Language
from faasd.source.sandbox import Mount, OneShot, Output, RootfsImage, Tmpfs

log = logging.getLogger(__name__)

BUILT_ROOTS = ("code", "deps")  # where a build's members may go, under /faas
MAX_BUILT_ENTRIES = 100_000
TAR_SLACK = 2  # a tar of a tree takes more than the tree: headers and padding
SAID_BYTES = 2000  # of what the installer said, the last ones answer a failed build


def build_limits(limits: Limits, config: Config) -> Limits:
    """The function's limits for its build, with room for what it installs: the deps tmpfs is
    charged to the container's memory, and the installer unpacks into /tmp first."""
    return dataclasses.replace(
        limits,
        memory_bytes=limits.memory_bytes + config.max_deps_bytes,
        tmp_bytes=max(limits.tmp_bytes, config.max_deps_bytes),
        timeout_seconds=config.build_timeout_seconds,
    )


def installer_said(stderr: bytes) -> str:
    """The last lines the installer wrote, at most ``SAID_BYTES``, starting at a whole line."""
    text = stderr.decode("utf-8", "replace").strip()
    if len(text) > SAID_BYTES:
        text = text[-SAID_BYTES:].partition("\n")[2] or text[-SAID_BYTES:]
    return text or "no output"


def checked_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """``member`` of a build's tar as the code layer holds it, or a 400: a plain relative name
    under one of ``BUILT_ROOTS``; a file, a directory or a symbolic link (resolved, like every
    link of a layer, inside the function's own rootfs); root's, with fixed modes and mtime."""
    name = member.name.removeprefix("./")
    parts = name.rstrip("/").split("/")
    if parts[0] not in BUILT_ROOTS or any(part in ("", ".", "..") or part.startswith(".wh.") for part in parts):
        raise InvalidCode(f"the build wrote {name[:120]!r}: not a relative path under {', '.join(BUILT_ROOTS)}")
    if not (member.isreg() or member.isdir() or member.issym()):
        raise InvalidCode(f"the build wrote {name[:120]!r}, neither a file, a directory nor a symbolic link")
    if len(parts) == 1 and not member.isdir():
        raise InvalidCode(f"the build wrote {name[:120]!r}, which must be a directory")
    info = tarfile.TarInfo("faas/" + "/".join(parts))
    info.type, info.size, info.linkname = member.type, member.size if member.isreg() else 0, member.linkname
    executable = member.isdir() or member.mode & 0o111
    info.mode = 0o755 if executable else 0o644
    info.mtime = FIXED_MTIME
    return info


def check_built(built: BinaryIO) -> None:
    """Refuse the build's tar unless every member passes ``checked_member``, before anything is
    unpacked from it. Blocking."""
    built.seek(0)
    with tarfile.open(fileobj=built, mode="r|") as tar:
        for count, member in enumerate(tar, 1):
            if count > MAX_BUILT_ENTRIES:
                raise InvalidCode(f"the build wrote more than {MAX_BUILT_ENTRIES} files")
            checked_member(member)
    built.seek(0)


def copy_built(built: BinaryIO, layer: tarfile.TarFile, taken: dict[str, bool]) -> None:
    """Add the members of the build's tar ``built`` to ``layer``, checked. ``taken`` holds the
    names in the layer already (true for a directory): a directory may come again and is left
    as it is; any other name twice is refused. Blocking."""
    with tarfile.open(fileobj=built, mode="r|") as tar:
        for count, member in enumerate(tar, 1):
            if count > MAX_BUILT_ENTRIES:
                raise InvalidCode(f"the build wrote more than {MAX_BUILT_ENTRIES} files")
            info = checked_member(member)
            if info.name in taken:
                if info.isdir() and taken[info.name]:
                    continue
                raise InvalidCode(f"the build wrote {info.name.removeprefix('faas/')}, which the code has too")
            taken[info.name] = info.isdir()
            layer.addfile(info, tar.extractfile(member) if member.isreg() else None)


def code_layer(out: BinaryIO, files: Mapping[str, bytes], built: BinaryIO) -> None:
    """A built function's code layer, into ``out``: its files under /faas/code as ``files_layer``
    lays them out, then the build's members. Blocking."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        taken = add_files(tar, files, CODE_DIR.lstrip("/"))
        built.seek(0)
        copy_built(built, tar, taken)


class Builder:
    """Runs a language's build step for a function, in a one-shot container of its runtime."""

    def __init__(self, config: Config, oneshot: OneShot) -> None:
        self._config = config
        self._oneshot = oneshot

    async def run(
        self, image: RootfsImage, language: Language, files: Collection[str], code: Path, limits: Limits, out: BinaryIO
    ) -> None:
        """Build the code of ``files``, in the host directory ``code``, into ``out`` (a tar), or
        raise a 400 with what the build said."""
        step = language.build
        assert step is not None
        mounts: list[Mount | Tmpfs] = [Mount(code, CODE_DIR)]
        if step.installs(files):
            if self._config.packages_dir is None:
                raise InvalidRequest(
                    f"the code has a {' or '.join(step.manifests)}, and this faasd installs dependencies from no "
                    "package directory: its operator sets one with faasd --packages DIR"
                )
            mounts.append(Mount(self._config.packages_dir, PACKAGES_DIR))
        if not os.path.lexists(image.rootfs / RUNTIME_DIR.lstrip("/") / step.script):
            raise InvalidRequest(
                "the runtime was added by a faasd that could not build its functions: remove it and add it again"
            )
        size = self._config.max_deps_bytes
        finished = await self._oneshot.run(
            image,
            [language.interpreter, f"{RUNTIME_DIR}/{step.script}"],
            ["HOME=/tmp"],
            [*mounts, Tmpfs(DEPS_DIR, size)],
            build_limits(limits, self._config),
            self._config.build_timeout_seconds,
            Output(out, TAR_SLACK * size + (1 << 20)),
        )
        if finished.output_over:
            raise InvalidCode(f"{step.what} wrote more than {TAR_SLACK * size} bytes")
        if finished.timed_out:
            raise InvalidCode(
                f"{step.what} took over {self._config.build_timeout_seconds:g} s: {installer_said(finished.stderr)}"
            )
        if finished.exit_code != 0:
            raise InvalidCode(
                f"{step.what} failed (exit {finished.exit_code}); it said:\n{installer_said(finished.stderr)}"
            )
        log.info("build what=%r bytes=%d duration_ms=%.1f", step.what, out.tell(), finished.duration_ms)
        await asyncio.to_thread(check_built, out)


@contextlib.contextmanager
def temporary_file(directory: Path) -> Iterator[BinaryIO]:
    """A new file in ``directory``, root's alone, removed afterwards."""
    with tempfile.TemporaryFile(dir=directory) as file:
        yield file
