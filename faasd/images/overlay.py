"""Read-only overlayfs mounts that compose a rootfs from layer directories, and their markers.

A layer directory holds one layer's changes in the form overlayfs reads from a lower layer
(Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories"): a deleted name is
a character device 0/0 of that name, and a directory that hides everything below it carries the
xattr ``trusted.overlay.opaque=y``. With no upperdir the mount is read-only by construction.

The ``lowerdir`` option must fit in one page, so layers are named by ``/proc/self/fd/N`` of
``O_PATH`` descriptors rather than by their paths: about 17 bytes each, whatever the state dir,
and each directory was opened without following a symlink. overlayfs resolves them once, at
mount time, in the mounting process: the fds can be closed right after.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from faasd.errors import RuntimeFailure

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_DEVICE = os.makedev(0, 0)
MAX_OPTIONS = 4096 - 1  # the mount data is one page, NUL included
# linux/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2
MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL = re.compile(r"\\([0-7]{3})")
PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def make_whiteout(name: str, dir_fd: int, owner: int) -> None:
    """Hide ``name`` of the lower layers: a 0/0 character device in its place."""
    os.mknod(name, stat.S_IFCHR | 0o600, WHITEOUT_DEVICE, dir_fd=dir_fd)
    os.chown(name, owner, owner, dir_fd=dir_fd, follow_symlinks=False)


def is_whiteout(status: os.stat_result) -> bool:
    return stat.S_ISCHR(status.st_mode) and status.st_rdev == WHITEOUT_DEVICE


def make_opaque(directory_fd: int) -> None:
    """Hide what lower layers hold in this directory (an fd opened for reading, not ``O_PATH``)."""
    os.setxattr(directory_fd, OPAQUE_XATTR, b"y")


def is_opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOENT):
            return False
        raise


def visible_layers(layers: Sequence[Path]) -> list[Path]:
    """``layers`` (top first) down to the first whose root is opaque: overlayfs honours the
    marker on any directory but the root of a lower layer, so the layers it hides are left out."""
    for depth, layer in enumerate(layers):
        if is_opaque(layer):
            return list(layers[: depth + 1])
    return list(layers)


def lowerdir_option(fds: Sequence[int]) -> str:
    """The mount data naming the layers ``fds`` (top first). Pure."""
    data = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds)
    if len(data) > MAX_OPTIONS:
        raise RuntimeFailure(f"the image has too many layers ({len(fds)}) for one overlay mount")
    return data


def mount_layers(target: Path, layers: Sequence[Path]) -> None:
    """Mount ``layers`` (top first) read-only at ``target``: nodev, nosuid, no upperdir."""
    with contextlib.ExitStack() as stack:
        fds = []
        for layer in layers:
            fds.append(os.open(layer, PATH_FLAGS))
            stack.callback(os.close, fds[-1])
        data = lowerdir_option(fds)
        flags = MS_RDONLY | MS_NODEV | MS_NOSUID
        if _libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, data.encode()) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount overlay on {target}: {os.strerror(code)}")


def unmount(target: Path) -> None:
    """Detach the mount at ``target``: a container still running on it keeps it until it ends."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unmount {target}: {os.strerror(code)}")


def mounts_below(directory: Path) -> list[Path]:
    """The mount points at or below ``directory``, deepest first (so each can be unmounted)."""
    found = []
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            point = Path(_unescape(line.split(" ")[4]))
            if point == directory or directory in point.parents:
                found.append(point)
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def is_mounted(target: Path) -> bool:
    return target in mounts_below(target)


def unmount_below(directory: Path) -> None:
    """Unmount everything at or below ``directory``, so it can be removed without reaching into a mount."""
    for point in mounts_below(directory):
        with contextlib.suppress(FileNotFoundError):
            unmount(point)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return _OCTAL.sub(lambda match: chr(int(match[1], 8)), field)
