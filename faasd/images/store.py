"""Where rootfs live: ``images/<function>/<version>/rootfs``, each one complete or absent.

An import unpacks into a hidden temporary directory beside its final place and is renamed
into place only once every layer applied cleanly and the data reached the disk; any failure
removes the temporary directory, so a crashed or refused import leaves nothing behind.

Each rootfs is owned by ids shifted into the containers' user namespace (``id_base`` + the
image's ids; see ``faasd.images.unpack``), and the directories above it are 0711: the mapped
root can traverse them to its rootfs, but list nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import InsufficientStorage, InvalidImage, RuntimeFailure
from faasd.images.archive import ImageArchive, ImageConfig
from faasd.images.unpack import UnpackLimits, apply_layers
from faasd.sandbox.spec import CONTROL_SOCKET, MOUNT_POINTS

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
TRAVERSE_ONLY = 0o711


@dataclass(frozen=True)
class ImportedImage:
    """What the registry records about an image once its rootfs is in place."""

    config: ImageConfig
    digest: str
    uid: int
    gid: int


class ImageStore:
    """The images directory: import, locate and remove rootfs.

    ``id_base`` is the host id of container root: the rootfs' owners are shifted by it.
    """

    def __init__(self, images_dir: Path, limits: UnpackLimits, id_base: int) -> None:
        self.images_dir = images_dir
        self._limits = limits
        self._id_base = id_base

    def rootfs(self, function: str, version: int) -> Path:
        return self.images_dir / function / str(version) / "rootfs"

    def check_servable(self, function: str, version: int) -> None:
        """Refuse a rootfs containers could not run from: missing, or owned by the host's root.

        A faasd from before containers ran in a user namespace left its rootfs unshifted.
        """
        rootfs = self.rootfs(function, version)
        try:
            owner = rootfs.stat().st_uid
        except FileNotFoundError:
            raise RuntimeFailure(f"the rootfs of version {version} is missing: deploy it again") from None
        if owner != self._id_base:
            raise RuntimeFailure(
                f"the rootfs of version {version} was written by an older faasd (owner {owner}, "
                f"not {self._id_base}): deploy it again with faas new"
            )

    def import_image(self, archive_path: Path, function: str, version: int, tag: str | None) -> ImportedImage:
        """Unpack the image in ``archive_path`` as ``function``'s ``version``. Blocking."""
        parent = self.images_dir / function
        parent.mkdir(parents=True, exist_ok=True)
        parent.chmod(TRAVERSE_ONLY)  # whatever the umask, and whatever an older faasd made
        final = parent / str(version)
        work = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{version}-", dir=parent))
        try:
            work.chmod(TRAVERSE_ONLY)
            rootfs = work / "rootfs"
            rootfs.mkdir()
            os.chown(rootfs, self._id_base, self._id_base)
            rootfs.chmod(0o755)
            with ImageArchive(archive_path, tag, self._limits.max_bytes) as archive:
                if not (archive.config.entrypoint or archive.config.cmd):
                    raise InvalidImage("the image has neither Entrypoint nor Cmd: nothing to run")
                apply_layers(archive.layers(), rootfs, self._limits, self._id_base)
                uid, gid = resolve_user(rootfs, archive.config.user)
                imported = ImportedImage(archive.config, archive.digest, uid, gid)
            make_mount_points(rootfs, self._id_base)
            os.sync()
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
            # The registry is told next, durably: the rename must not be lost in a crash after it.
            fsync_directory(parent)
            return imported
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(
                    f"the disk under {self.images_dir} is full: free space and deploy again"
                ) from exc
            raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only when empty: the first import of a function failed

    def remove_version(self, function: str, version: int) -> None:
        shutil.rmtree(self.images_dir / function / str(version), ignore_errors=True)

    def remove_function(self, function: str) -> None:
        shutil.rmtree(self.images_dir / function, ignore_errors=True)

    def sweep(self, known: dict[str, set[int]]) -> list[Path]:
        """Remove half-imported and unregistered rootfs (left by a crash); return what went."""
        if not self.images_dir.is_dir():
            return []
        doomed: list[Path] = []
        for function_dir in self.images_dir.iterdir():
            versions = known.get(function_dir.name)
            if versions is None:
                doomed.append(function_dir)
            else:
                doomed += [v for v in function_dir.iterdir() if not v.name.isdigit() or int(v.name) not in versions]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return doomed


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it, say) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_mount_points(rootfs: Path, owner: int) -> None:
    """Create what runc mounts over, so it never has to write into a shared rootfs.

    What is made belongs to the host uid and gid ``owner`` (container root).
    """
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name, mode in MOUNT_POINTS.items():
            try:
                os.mkdir(name, dir_fd=root_fd)
            except FileExistsError:
                continue
            os.chown(name, owner, owner, dir_fd=root_fd, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=root_fd)
        control = CONTROL_SOCKET.lstrip("/")
        try:
            os.close(os.open(control, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=root_fd))
        except FileExistsError:
            return
        os.chown(control, owner, owner, dir_fd=root_fd, follow_symlinks=False)
    finally:
        os.close(root_fd)


def resolve_user(rootfs: Path, user: str) -> tuple[int, int]:
    """The numeric uid and gid for an image's ``User`` ("name", "uid", "name:group", "uid:gid").

    Names are looked up in the image's own /etc/passwd and /etc/group, read without
    following symlinks: the rootfs came from an untrusted archive.
    """
    name, _, group = user.partition(":")
    if not name:
        return 0, 0
    if name.isdigit():
        uid, gid = int(name), 0
    else:
        entry = _lookup(rootfs, "passwd", name)
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        gid = int(group) if group.isdigit() else int(_lookup(rootfs, "group", group)[2])
    return uid, gid


def _lookup(rootfs: Path, database: str, key: str) -> list[str]:
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        etc_fd = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
        try:
            fd = os.open(database, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=etc_fd)
        finally:
            os.close(etc_fd)
    except OSError as exc:
        raise InvalidImage(f"the image's User names {key!r} but /etc/{database} cannot be read") from exc
    finally:
        os.close(root_fd)
    with os.fdopen(fd, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 4 and fields[0] == key and fields[2].isdigit():
                return fields
    raise InvalidImage(f"the image's User names {key!r}, which is not in its /etc/{database}")
