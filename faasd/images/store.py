"""Where rootfs live: ``images/<function>/<version>/rootfs``, each one complete or absent.

A version's rootfs is a read-only overlayfs mount composed of the image's layers, which live
once each in the layer store (``faasd.images.layers``), and of a small layer of the version's
own (``top``): the mount points runc needs and the control socket. ``layers`` beside it lists
the image's layers, bottom first: it is what keeps them in the store, and what mounts the
rootfs again at start-up (``mount_all``).

An import builds the version in a hidden temporary directory beside its final place and renames
it into place only once every layer is in the store and the data reached the disk; any failure
removes the temporary directory, and the layers it alone brought, so a crashed or refused import
leaves nothing behind.

Each layer is owned by ids shifted into the containers' user namespace (``id_base`` + the
image's ids; see ``faasd.images.unpack``), and the directories above a rootfs are 0711: the
mapped root can traverse them to its rootfs, but list nothing. The images dir itself is
searchable by container root's group alone (``prepare``): other local users reach no rootfs.

A version dir from before the layer store (a plain ``rootfs`` directory, no ``layers``) is
served as it is, and removed like any other.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import InsufficientStorage, InvalidImage, RuntimeFailure
from faasd.images import overlay
from faasd.images.archive import ImageArchive, ImageConfig
from faasd.images.layers import LayerStore, fsync_path
from faasd.images.runnable import check_working_dir, resolve_user
from faasd.images.tree import remove_or_log
from faasd.images.unpack import Budget, UnpackLimits
from faasd.sandbox.spec import CONTROL_SOCKET, MOUNT_POINTS

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
TRAVERSE_ONLY = 0o711
IMAGES_MODE = 0o710  # root's, and container root's group's to search
LAYER_LIST = "layers"
TOP_LAYER = "top"
EMPTY_LAYER = "empty"


@dataclass(frozen=True)
class ImportedImage:
    """What the registry records about an image once its rootfs is in place."""

    config: ImageConfig
    digest: str
    uid: int
    gid: int


class ImageStore:
    """The images directory: import, locate, mount and remove rootfs.

    ``id_base`` is the host id of container root: the layers' owners are shifted by it. The
    layer store lives beside ``images_dir``, in the same state dir, unless ``layers`` gives one
    another store uses too (runtimes share the functions' layers).
    """

    def __init__(self, images_dir: Path, limits: UnpackLimits, id_base: int, layers: LayerStore | None = None) -> None:
        self.images_dir = images_dir
        # Stores that share ``layers`` (functions' and runtimes') each keep the layers they list.
        self.layers = layers or LayerStore(images_dir.parent / "layers", id_base)
        self.layers.owners.append(images_dir)
        self._limits = limits
        self._id_base = id_base

    def prepare(self) -> None:
        """Make the images dir root's, searchable by container root alone (``IMAGES_MODE``). At start-up.

        A container's runc init runs as container root (host uid and gid ``id_base``) and walks
        the host path to its rootfs; no other local user gets as far as a rootfs, where the
        image's files (and whatever secrets an image holds) are readable.
        """
        self.images_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.images_dir, 0, self._id_base)
        self.images_dir.chmod(IMAGES_MODE)

    def rootfs(self, function: str, version: int) -> Path:
        return self.images_dir / function / str(version) / "rootfs"

    def check_servable(self, function: str, version: int) -> None:
        """Refuse a rootfs containers could not run from: missing, unmounted, or owned by the host's root.

        A faasd from before containers ran in a user namespace left its rootfs unshifted.
        """
        rootfs = self.rootfs(function, version)
        if (rootfs.parent / LAYER_LIST).exists() and not overlay.is_mounted(rootfs):
            raise RuntimeFailure(
                f"the rootfs of version {version} is not mounted: see the daemon's log for why, or deploy it again"
            )
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
        """Import the image in ``archive_path`` as ``function``'s ``version`` and mount its rootfs. Blocking."""
        parent = self.images_dir / function
        parent.mkdir(parents=True, exist_ok=True)
        parent.chmod(TRAVERSE_ONLY)  # whatever the umask, and whatever an older faasd made
        final = parent / str(version)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{version}-", dir=parent))
        try:
            work.chmod(TRAVERSE_ONLY)
            with self.layers.session() as session:
                with ImageArchive(archive_path, tag, self._limits.max_bytes) as archive:
                    if not (archive.config.entrypoint or archive.config.cmd):
                        raise InvalidImage("the image has neither Entrypoint nor Cmd: nothing to run")
                    diff_ids = session.import_layers(archive, Budget(self._limits))
                    config, digest = archive.config, archive.digest
                make_top_layer(work / TOP_LAYER, self._id_base)
                write_layer_list(work / LAYER_LIST, diff_ids)
                (work / "rootfs").mkdir(mode=TRAVERSE_ONLY)
                self._mount(work)
                uid, gid = resolve_user(work / "rootfs", config.user)
                check_working_dir(work / "rootfs", config.working_dir)
                if final.exists() and not discard(final):
                    raise RuntimeFailure(f"{final} is left from before and cannot be removed: see the daemon's log")
                work.rename(final)  # the mount on rootfs moves with it
                # The registry is told next, durably: the rename must not be lost in a crash after it.
                fsync_path(parent)
            log.info(
                "image imported function=%s version=%s layers=%d unpacked=%d reused=%d seconds=%.3f",
                function,
                version,
                len(diff_ids),
                session.unpacked,
                session.reused,
                time.monotonic() - started,
            )
            return ImportedImage(config, digest, uid, gid)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(
                    f"the disk under {self.images_dir} is full: free space and deploy again"
                ) from exc
            raise
        finally:
            if work.exists():
                discard(work)
                self._collect()  # the layers only this failed import brought
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only when empty: the first import of a function failed

    def remove_version(self, function: str, version: int) -> None:
        discard(self.images_dir / function / str(version))
        self._collect()

    def remove_function(self, function: str) -> None:
        discard(self.images_dir / function)
        self._collect()

    def sweep(self, known: dict[str, set[int]]) -> list[Path]:
        """Remove half-imported and unregistered versions (left by a crash), their mounts, half
        layers and the layers no version lists; return what went. At start-up, before ``mount_all``.

        What cannot be removed is logged and left: the daemon serves the functions it can.
        """
        doomed: list[Path] = []
        if self.images_dir.is_dir():
            for function_dir in self.images_dir.iterdir():
                versions = known.get(function_dir.name)
                if versions is None or not function_dir.is_dir():
                    doomed.append(function_dir)
                else:
                    doomed += [v for v in function_dir.iterdir() if not v.name.isdigit() or int(v.name) not in versions]
        gone = [path for path in doomed if discard(path)]
        return gone + self.layers.sweep() + self._collect()

    def mount_all(self, known: dict[str, set[int]]) -> None:
        """Mount the rootfs of every version in ``known`` that has layers and is not mounted yet.

        At start-up: mounts do not outlive a reboot, nor a daemon in a mount namespace of its own.
        A rootfs that cannot be mounted is logged; ``check_servable`` then says so.
        """
        for function, versions in known.items():
            for version in sorted(versions):
                directory = self.images_dir / function / str(version)
                if not (directory / LAYER_LIST).exists() or overlay.is_mounted(directory / "rootfs"):
                    continue
                try:
                    self._mount(directory)
                except (OSError, InvalidImage, RuntimeFailure) as exc:
                    log.error("cannot mount function=%s version=%s error=%s", function, version, exc)
                    continue
                log.info("mounted function=%s version=%s", function, version)

    def unmount_all(self) -> None:
        """Unmount every rootfs (at shutdown): the state dir is left as plain files."""
        if self.images_dir.is_dir():
            overlay.unmount_below(self.images_dir)

    def _mount(self, directory: Path) -> None:
        """Mount ``directory``'s rootfs from its top layer and the layers its list names.

        overlayfs mounts no fewer than two lower layers without an upper one: an image of no
        layers (or whose bottom layer hides nothing) gets an empty one under its top layer.
        """
        lower = [self.layers.path(diff_id) for diff_id in reversed(read_layer_list(directory / LAYER_LIST))]
        layers = overlay.visible_layers([directory / TOP_LAYER, *lower])
        if len(layers) == 1:
            (directory / EMPTY_LAYER).mkdir(exist_ok=True)
            layers.append(directory / EMPTY_LAYER)
        overlay.mount_layers(directory / "rootfs", layers)

    def _collect(self) -> list[Path]:
        return self.layers.collect(self._referenced)

    def _referenced(self) -> set[str]:
        """The layers every version dir lists, those of imports under way included, in every
        store that shares this layer store."""
        return {
            diff_id
            for owner in self.layers.owners
            for layer_list in owner.glob(f"*/*/{LAYER_LIST}")
            for diff_id in read_layer_list(layer_list)
        }


def discard(directory: Path) -> bool:
    """Remove a version or function dir, its mounts first, so nothing reaches into a layer; whether
    it is gone (what cannot be removed is logged, and left for the next start-up's sweep)."""
    overlay.unmount_below(directory)
    return remove_or_log(directory)


def make_top_layer(top: Path, owner: int) -> None:
    """The version's own layer: the root's owner and mode, the mount points and the control socket."""
    top.mkdir()
    os.chown(top, owner, owner)
    top.chmod(0o755)
    make_mount_points(top, owner)
    for directory, _, names in os.walk(top):
        for name in names:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def write_layer_list(path: Path, diff_ids: list[str]) -> None:
    with open(path, "x", encoding="ascii") as out:
        out.write("".join(f"{diff_id}\n" for diff_id in diff_ids))
        out.flush()
        os.fsync(out.fileno())


def read_layer_list(path: Path) -> list[str]:
    """The diff_ids a version lists, bottom first; none when it has no list (an older faasd's)."""
    try:
        return path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        return []


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
