"""Apply image layers onto a directory without ever leaving it.

Every path is resolved by the kernel one component at a time from an fd of the root, with
``O_NOFOLLOW``: a component that is a symlink is refused rather than followed, so no entry can
write through a link, whether it came from this layer or an earlier one. The last component is
never followed either: it is created, replaced or removed with the ``*at`` calls. Names with
``..`` are refused before any lookup. This is the shape of umoci's ``UnpackEntry``; see
image-spec layer.md for the change-set and whiteout rules cited below.

Device nodes and fifos are skipped: a container gets its /dev from runc, and an image has no
business creating device nodes on the host's disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import FaasError, ImageTooLarge, InsufficientStorage, InvalidImage, UnsafeArchive

# image-spec layer.md, "Whiteouts": a file named .wh.NAME deletes NAME from lower layers;
# .wh..wh..opq in a directory hides everything lower layers put in that directory.
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on one image: regular-file bytes and entries, across all its layers."""

    max_bytes: int
    max_entries: int = 1_000_000


class _Budget:
    """What is left of the limits while layers are applied."""

    def __init__(self, limits: UnpackLimits) -> None:
        self.limits = limits
        self.bytes = limits.max_bytes
        self.entries = limits.max_entries

    def take_entry(self) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise ImageTooLarge(f"the image has more than {self.limits.max_entries} entries")

    def take_bytes(self, size: int) -> None:
        self.bytes -= size
        if self.bytes < 0:
            raise ImageTooLarge(f"the image unpacks to more than {self.limits.max_bytes} bytes")


def apply_layers(layers: Iterable[tarfile.TarFile], root: Path, limits: UnpackLimits) -> None:
    """Apply ``layers`` in order onto the directory ``root``."""
    budget = _Budget(limits)
    root_fd = os.open(root, DIR_FLAGS)
    try:
        for index, layer in enumerate(layers, start=1):
            try:
                _LayerApplier(root_fd, budget).apply(layer)
            except FaasError as exc:
                exc.message = f"layer {index}: {exc.message}"
                exc.args = (exc.message,)
                raise
    finally:
        os.close(root_fd)


def split_name(name: str) -> list[str]:
    """The components of an entry name, relative to the root; ``..`` is refused outright."""
    if "\0" in name:
        raise UnsafeArchive(f"entry {name!r} has a NUL byte in its name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"entry {name!r} climbs out of the rootfs")
    return parts


class _LayerApplier:
    """Applies one layer; remembers what it created (for opaque whiteouts) and directory mtimes."""

    def __init__(self, root_fd: int, budget: _Budget) -> None:
        self._root_fd = root_fd
        self._budget = budget
        self._created: set[tuple[str, ...]] = set()
        self._dir_mtimes: list[tuple[list[str], float]] = []

    def apply(self, layer: tarfile.TarFile) -> None:
        for member in layer:
            try:
                self.apply_entry(member, layer)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientStorage("the disk filled up while unpacking the image") from exc
                raise InvalidImage(f"entry {member.name!r}: {exc.strerror or exc}") from exc
            except FaasError as exc:
                if not exc.message.startswith("entry "):
                    exc.message = f"entry {member.name!r}: {exc.message}"
                    exc.args = (exc.message,)
                raise
        # Set last: creating entries inside a directory changes its mtime.
        for parts, mtime in reversed(self._dir_mtimes):
            with _Dir(self._root_fd, parts[:-1], create=False) as parent:
                os.utime(parts[-1], (mtime, mtime), dir_fd=parent.fd, follow_symlinks=False)

    def apply_entry(self, member: tarfile.TarInfo, layer: tarfile.TarFile) -> None:
        """Make every path decision for one entry."""
        parts = split_name(member.name)
        if not parts:
            if member.isdir():
                return  # the root itself: its metadata stays ours
            raise UnsafeArchive(f"entry {member.name!r} would replace the rootfs itself")
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        self._budget.take_entry()
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            return  # device nodes, fifos: skipped (see the module docstring)
        with _Dir(self._root_fd, parts[:-1], create=True) as parent:
            existing = _lstat(base, parent.fd)
            if member.isdir():
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    _remove(base, parent.fd, existing)
                    os.mkdir(base, 0o700, dir_fd=parent.fd)
                self._dir_mtimes.append((parts, member.mtime))
            elif member.islnk():
                self._hardlink(member, base, parent.fd, existing)
                self._created.add(tuple(parts))
                return  # a hard link shares its target's metadata
            else:
                # Never write into what is there: it may be a hard link to another file.
                _remove(base, parent.fd, existing)
                if member.issym():
                    os.symlink(member.linkname, base, dir_fd=parent.fd)
                else:
                    self._write_file(member, layer, base, parent.fd)
            os.chown(base, member.uid, member.gid, dir_fd=parent.fd, follow_symlinks=False)
            if not member.issym():
                # chown clears set-id bits, so the mode comes after it.
                os.chmod(base, member.mode & 0o7777, dir_fd=parent.fd)
                os.utime(base, (member.mtime, member.mtime), dir_fd=parent.fd)
        self._created.add(tuple(parts))

    def _write_file(self, member: tarfile.TarInfo, layer: tarfile.TarFile, base: str, parent_fd: int) -> None:
        self._budget.take_bytes(member.size)
        source = layer.extractfile(member)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent_fd)
        with os.fdopen(fd, "wb") as target:
            if source is not None:
                shutil.copyfileobj(source, target, COPY_CHUNK)

    def _hardlink(self, member: tarfile.TarInfo, base: str, parent_fd: int, existing: os.stat_result | None) -> None:
        target = split_name(member.linkname)
        if not target:
            raise UnsafeArchive(f"hard link to {member.linkname!r} names the rootfs itself")
        with _Dir(self._root_fd, target[:-1], create=False) as target_parent:
            source = _lstat(target[-1], target_parent.fd)
            if source is None:
                raise InvalidImage(f"hard link to {member.linkname!r}, which does not exist")
            if stat.S_ISDIR(source.st_mode):
                raise UnsafeArchive(f"hard link to the directory {member.linkname!r}")
            if existing is not None and (existing.st_dev, existing.st_ino) == (source.st_dev, source.st_ino):
                return
            _remove(base, parent_fd, existing)
            os.link(target[-1], base, src_dir_fd=target_parent.fd, dst_dir_fd=parent_fd, follow_symlinks=False)

    def _whiteout(self, parts: list[str]) -> None:
        base = parts[-1]
        try:
            directory = _Dir(self._root_fd, parts[:-1], create=False)
        except FileNotFoundError:
            return  # nothing below to hide
        with directory:
            if base == OPAQUE_WHITEOUT:
                prefix = tuple(parts[:-1])
                for name in os.listdir(directory.fd):
                    if prefix + (name,) not in self._created:
                        _remove(name, directory.fd, _lstat(name, directory.fd))
                return
            hidden = base[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX):
                raise UnsafeArchive(f"malformed whiteout {'/'.join(parts)!r}")
            _remove(hidden, directory.fd, _lstat(hidden, directory.fd))


class _Dir:
    """An fd of the directory at ``parts`` below the root, reached without following links."""

    def __init__(self, root_fd: int, parts: list[str], create: bool) -> None:
        fd = os.dup(root_fd)
        try:
            for depth, part in enumerate(parts):
                try:
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    where = "/".join(parts[: depth + 1])
                    info = _lstat(part, fd)
                    if info is not None and stat.S_ISLNK(info.st_mode):
                        raise UnsafeArchive(f"writes through the symlink {where!r}") from exc
                    raise InvalidImage(f"{where!r} is not a directory") from exc
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int, existing: os.stat_result | None) -> None:
    """Remove ``name`` (a whole tree if it is a directory) without following any link."""
    if existing is None:
        return
    if stat.S_ISDIR(existing.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
