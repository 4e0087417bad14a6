"""Unpack one image layer into a directory of its own without ever leaving it.

Each layer is unpacked alone, into an empty directory, in the form overlayfs reads a lower
layer from (see ``faasd.images.overlay``): the kernel composes the rootfs, so a layer's
deletions are recorded, not applied. ``.wh.NAME`` becomes a 0/0 character device NAME; the
directory of ``.wh..wh..opq`` gets the opaque xattr. A hard link may only name a file of its
own layer: the directory is all there is, and a layer's contents must not depend on the layers
below it, since it is stored once for every image that has it.

Every path is resolved by the kernel one component at a time, from an fd of the root, with
``O_NOFOLLOW``: a component that is a symlink is refused rather than followed, so no entry can
write through a link the layer made. The last component is never followed either: it is
created, replaced or removed with the ``*at`` calls. ``..`` is refused before any lookup. A path
through a symlink of a lower layer is a real directory of this layer, which hides that symlink
once composed: contained either way. This is the shape of umoci's ``UnpackEntry``
(oci/layer/tar_extract.go): ``_Layer.apply_entry`` makes every path decision. The change-set
rules are image-spec layer.md's.

Ownership is shifted into the user namespace containers run in: an entry owned by uid/gid N in
the tar is owned by ``id_base + N`` on disk, and directories made on the way belong to
``id_base`` (container root). An id at or above ``USERNS_IDS`` has no host id in that namespace,
so the entry is refused (as rootless Docker and podman do) rather than squashed onto another id.

An entry name that appears twice in one layer is refused: which copy wins is the kind of
ambiguity a scanner and a runtime can disagree on. Names must fit in ``PATH_MAX`` once they are
absolute inside the container, and be at most ``MAX_DEPTH`` components deep.

Deliberately not unpacked:

- device nodes and fifos: a container gets its /dev from runc, and an image has no business
  creating device nodes on the host's disk (the only ones made are whiteouts, 0/0);
- extended attributes (file capabilities among them): containers run with no capabilities and
  ``noNewPrivileges``, so they would grant nothing;
- the metadata of the root itself ("./" entries): its owner and mode are the store's.

Symlink targets are stored as they are, whatever they say: they are only ever resolved inside the
container, whose root is this directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from faasd.config import USERNS_IDS
from faasd.errors import FaasError, ImageTooLarge, InsufficientStorage, InvalidImage, UnsafeArchive
from faasd.images.overlay import is_whiteout, make_opaque, make_whiteout
from faasd.images.tree import remove_entry

# image-spec layer.md, "Whiteouts": an entry named .wh.NAME deletes NAME from lower layers;
# .wh..wh..opq makes its directory opaque: everything lower layers put in it is hidden.
# Other .wh..wh. names are aufs metadata, ignored like containerd does.
WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"

# O_PATH: walking needs no read permission on a directory and opens nothing for I/O.
WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
COPY_CHUNK = 1 << 20
PATH_MAX = 4096  # linux/limits.h, the terminating NUL included
# Real images nest a few dozen directories deep; PATH_MAX alone would allow 2 048.
MAX_DEPTH = 256
SHOWN_NAME_CHARS = 160
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on one image, across all its layers: regular-file bytes, and entries."""

    max_bytes: int
    max_entries: int


class Budget:
    """What is left of an image's ``UnpackLimits``; one per image, shared by its layers."""

    def __init__(self, limits: UnpackLimits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_bytes
        self.entries_left = limits.max_entries

    def take_entry(self) -> None:
        self.entries_left -= 1
        if self.entries_left < 0:
            raise ImageTooLarge(f"the image has more than {self.limits.max_entries} entries")

    def take_bytes(self, size: int) -> None:
        self.bytes_left -= size
        if self.bytes_left < 0:
            raise ImageTooLarge(f"the image unpacks to more than {self.limits.max_bytes} bytes of files")


def apply_layer(layer: tarfile.TarFile, root: Path, budget: Budget, id_base: int) -> None:
    """Unpack one layer (a streaming tar) into the empty directory ``root``. Blocking.

    Entries and bytes are taken from ``budget``, one per image, shared by its layers. Owners are
    shifted by ``id_base`` (see the module docstring); 0 keeps them as they are. On error ``root``
    is left half-written: the caller unpacks into a directory of its own and removes it on failure.
    """
    root_fd = os.open(root, WALK_FLAGS)
    try:
        _Layer(root_fd, budget, id_base).apply(layer)
    finally:
        os.close(root_fd)


def split_name(name: str) -> list[str]:
    """The components of an entry name below the root.

    Empty and "." components are dropped ("./a//b" is "a/b"); "." and "/" alone name the root.
    ``..`` is refused, not resolved: a layer has no reason to climb. An absolute name is refused
    too, rather than guessed at: Docker, podman and buildah write every layer with relative names.
    """
    if "\0" in name:
        raise UnsafeArchive("has a NUL byte in its name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive("climbs out of the rootfs")
    if parts and name.startswith("/"):
        raise UnsafeArchive("has an absolute name: layer entries are named relative to the image's root")
    if len(os.fsencode("/" + "/".join(parts))) >= PATH_MAX:
        raise InvalidImage(f"has a name longer than PATH_MAX ({PATH_MAX} bytes) in the container")
    if len(parts) > MAX_DEPTH:
        raise InvalidImage(f"is {len(parts)} levels deep: at most {MAX_DEPTH} are unpacked")
    return parts


class _Layer:
    """One layer being applied.

    The only state kept per entry is what the layer itself needs: the names of its entries
    (to refuse a second one), the paths it made (a whiteout never hides those), its opaque
    directories, and its directories' mtimes.
    """

    def __init__(self, root_fd: int, budget: Budget, id_base: int) -> None:
        self._root_fd = root_fd
        self._budget = budget
        self._id_base = id_base
        self._entries: set[str] = set()  # "a/b/c" for each entry, as the tar names it
        self._made: set[str] = set()  # "a/b/c", and every directory above it
        self._opaque: set[str] = set()
        self._dir_mtimes: dict[str, float] = {}

    def apply(self, layer: tarfile.TarFile) -> None:
        name: str | None = None
        while True:
            with _translated("the first header" if name is None else f"the header after entry {_shown(name)}"):
                member = layer.next()
            if member is None:
                break
            name = member.name
            with _translated(f"entry {_shown(name)}"):
                self.apply_entry(member, layer)
            # tarfile keeps every header it has read, even when streaming: drop them, so a
            # layer of a million entries costs no more memory than a layer of ten.
            layer.members.clear()  # type: ignore[attr-defined]  # not in typeshed, but a plain list
        with _translated("the layer's end"):
            self._mark_opaque()
            self._set_dir_mtimes()

    def apply_entry(self, member: tarfile.TarInfo, layer: tarfile.TarFile) -> None:
        """Make every path decision for one entry: where it lands and what it may replace."""
        self._budget.take_entry()
        parts = split_name(member.name)
        if not parts:
            # ".", "/" or "": the root itself is never retyped (a symlink named "." would make
            # the whole rootfs point elsewhere: CVE-2021-29136), nor are its owner and mode set.
            if member.isdir():
                return
            raise UnsafeArchive("would replace the rootfs itself")
        path = "/".join(parts)
        if path in self._entries:
            raise InvalidImage("appears twice in the layer")
        self._entries.add(path)
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            return  # device nodes, fifos: skipped (see the module docstring)
        base = parts[-1]
        with _walk(self._root_fd, parts[:-1], create_as=self._id_base) as parent:
            existing = _lstat(base, parent)
            if member.islnk():
                self._hardlink(member.linkname, base, parent, existing)
            else:
                owner = self._host_ids(member)
                if not (member.isdir() and existing is not None and stat.S_ISDIR(existing.st_mode)):
                    # Replace, never write into what is there: it may be a symlink, or a hard
                    # link sharing its inode with another file. Only dir over dir is merged.
                    _remove(base, parent, existing)
                    if member.isdir():
                        os.mkdir(base, 0o700, dir_fd=parent)
                        if existing is not None and is_whiteout(existing):
                            # This layer deleted the name, then made a directory of it: the
                            # lower layers' directory of that name must not show through.
                            self._opaque.add(path)
                    elif member.issym():
                        os.symlink(member.linkname, base, dir_fd=parent)
                    else:
                        self._write_file(member, layer, base, parent)
                _set_metadata(member, owner, base, parent)
                if member.isdir():
                    self._dir_mtimes[path] = member.mtime
        self._made_path(parts)

    def _host_ids(self, member: tarfile.TarInfo) -> tuple[int, int]:
        """The entry's uid and gid as the host sees them from outside the user namespace."""
        if not (0 <= member.uid < USERNS_IDS and 0 <= member.gid < USERNS_IDS):
            raise InvalidImage(
                f"is owned by uid {member.uid} gid {member.gid}, outside the container's user namespace "
                f"(ids 0 to {USERNS_IDS - 1}): chown it in the image"
            )
        return self._id_base + member.uid, self._id_base + member.gid

    def _write_file(self, member: tarfile.TarInfo, layer: tarfile.TarFile, base: str, parent: int) -> None:
        self._budget.take_bytes(member.size)
        source = layer.extractfile(member)
        with os.fdopen(os.open(base, NEW_FILE_FLAGS, 0o600, dir_fd=parent), "wb") as target:
            if source is not None:
                shutil.copyfileobj(source, target, COPY_CHUNK)

    def _hardlink(self, linkname: str, base: str, parent: int, existing: os.stat_result | None) -> None:
        """Link ``base`` to ``linkname``, found inside the root by the same walk as any entry.

        A hard link carries no metadata of its own: it shares its target's inode.
        """
        try:
            target = split_name(linkname)
        except UnsafeArchive as exc:
            raise UnsafeArchive(f"hard link target {linkname!r} {exc.message}") from exc
        if not target:
            raise UnsafeArchive(f"hard link to {linkname!r}, the rootfs itself")
        try:
            with _walk(self._root_fd, target[:-1]) as target_parent:
                source = os.stat(target[-1], dir_fd=target_parent, follow_symlinks=False)
                if stat.S_ISDIR(source.st_mode):
                    raise UnsafeArchive(f"hard link to the directory {linkname!r}")
                if existing is not None and (existing.st_dev, existing.st_ino) == (source.st_dev, source.st_ino):
                    return
                _remove(base, parent, existing)
                os.link(target[-1], base, src_dir_fd=target_parent, dst_dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise InvalidImage(
                f"hard link to {linkname!r}, which does not exist in this layer "
                "(layers are stored apart: a link may only name a file of its own layer)"
            ) from exc

    def _whiteout(self, parts: list[str]) -> None:
        directory, base = parts[:-1], parts[-1]
        self._made_path(directory)  # the whiteout's directory is part of this layer
        if base.startswith(WHITEOUT_META_PREFIX) and base != OPAQUE_WHITEOUT:
            return
        hidden = base.removeprefix(WHITEOUT_PREFIX)
        if hidden in ("", ".", ".."):
            raise UnsafeArchive(f"malformed whiteout {base!r}")
        if base != OPAQUE_WHITEOUT and "/".join([*directory, hidden]) in self._made:
            return  # layer.md: a whiteout hides lower layers only, never its own layer's files
        with _walk(self._root_fd, directory, create_as=self._id_base) as parent:
            if base == OPAQUE_WHITEOUT:
                self._opaque.add("/".join(directory))  # marked at the layer's end: _mark_opaque
            else:
                make_whiteout(hidden, parent, self._id_base)

    def _made_path(self, parts: list[str]) -> None:
        for depth in range(len(parts), 0, -1):
            path = "/".join(parts[:depth])
            if path in self._made:
                break
            self._made.add(path)

    def _mark_opaque(self) -> None:
        """Mark this layer's opaque directories once the whole layer is applied: an entry after
        the marker may replace its directory."""
        for path in self._opaque:
            try:
                with _walk(self._root_fd, path.split("/") if path else []) as directory:
                    fd = os.open(".", LIST_FLAGS, dir_fd=directory)  # O_PATH fds take no xattrs
            except (FileNotFoundError, NotADirectoryError, UnsafeArchive):
                continue  # no longer a directory: an entry later in this layer replaced it
            try:
                make_opaque(fd)
            finally:
                os.close(fd)

    def _set_dir_mtimes(self) -> None:
        """Set directory mtimes last: every entry made inside a directory changed its mtime."""
        for path, mtime in self._dir_mtimes.items():
            parts = path.split("/")
            try:
                with _walk(self._root_fd, parts[:-1]) as parent:
                    if stat.S_ISDIR(os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode):
                        os.utime(parts[-1], (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, UnsafeArchive):
                continue  # replaced or removed later in this layer


@contextmanager
def _walk(root_fd: int, parts: list[str], create_as: int | None = None) -> Iterator[int]:
    """An ``O_PATH`` fd of the directory ``parts`` below the root, reached without following links.

    Missing directories are made (mode 0755, like tar; owned by the host uid and gid
    ``create_as``) when ``create_as`` is given; otherwise ``FileNotFoundError``. A component
    that is a symlink raises ``UnsafeArchive``, one that is something else ``NotADirectoryError``.
    """
    fd = os.dup(root_fd)
    try:
        for depth, part in enumerate(parts):
            try:
                next_fd = os.open(part, WALK_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create_as is None:
                    raise
                os.mkdir(part, dir_fd=fd)
                os.chown(part, create_as, create_as, dir_fd=fd, follow_symlinks=False)
                os.chmod(part, 0o755, dir_fd=fd)  # whatever the daemon's umask
                next_fd = os.open(part, WALK_FLAGS, dir_fd=fd)
            except NotADirectoryError as exc:  # O_DIRECTORY|O_NOFOLLOW on a symlink: ENOTDIR
                where = "/".join(parts[: depth + 1])
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise UnsafeArchive(f"writes through the symlink {where!r}") from exc
                raise NotADirectoryError(errno.ENOTDIR, f"{where!r} is not a directory") from exc
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int, existing: os.stat_result | None) -> None:
    """Remove ``name`` (a whole tree if it is a directory) without following any link."""
    if existing is not None:
        remove_entry(name, dir_fd)


def _set_metadata(member: tarfile.TarInfo, owner: tuple[int, int], base: str, parent: int) -> None:
    """``owner`` (the header's ids, shifted), mode (set-id bits included) and mtime from the header.

    ``base`` was just made or checked to be a directory by the caller, so only the symlink case
    needs care: Linux has no mode on symlinks, and chown/utime must not follow them.
    """
    os.chown(base, *owner, dir_fd=parent, follow_symlinks=False)
    if not member.issym():
        os.chmod(base, member.mode & 0o7777, dir_fd=parent)  # after chown, which clears set-id bits
    if not member.isdir():  # directories get theirs once the layer is applied
        os.utime(base, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


def _shown(name: str) -> str:
    """An entry name for a message: quoted, and shortened in the middle when it is long."""
    if len(name) > SHOWN_NAME_CHARS:
        name = f"{name[:100]}…{name[-40:]}"
    return repr(name)


@contextmanager
def _translated(context: str) -> Iterator[None]:
    """Turn what the OS and tarfile raise into the error family, with ``context`` in front."""
    try:
        yield
    except FaasError as exc:
        raise exc.in_context(context) from exc
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise InsufficientStorage(
                "the disk filled up while unpacking the image: free space and deploy again"
            ) from exc
        raise InvalidImage(f"{context}: {exc.strerror or exc}") from exc
    except tarfile.TarError as exc:
        raise InvalidImage(f"{context}: not a readable tar stream: {exc}") from exc
    except (ValueError, OverflowError) as exc:
        # Header values the OS cannot take: a NUL in a link target, a uid or mtime out of range.
        raise InvalidImage(f"{context}: {exc}") from exc
