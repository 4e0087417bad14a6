"""Remove a directory tree of any depth, without recursion and without following a link.

``shutil.rmtree`` recurses once per level, so a tree deeper than Python's recursion limit (an
image layer can be 2 000 directories deep within PATH_MAX) raises ``RecursionError`` half-way.
Here the walk is a loop: one open directory at a time, a list of the names still to visit at
each level above it, and the way back up by ``..``, checked against the device and inode the
directory had on the way down, so a rename meanwhile cannot lead the removal elsewhere.

Nothing is followed: entries are opened with ``O_NOFOLLOW``, symlinks are unlinked as they are,
and a directory on another filesystem (a mount point left inside) is not entered: the removal
fails there (``EBUSY``, or ``ENOTEMPTY`` for its parent) rather than empty a mounted filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Level:
    """A directory on the way down: its name in its parent, its identity, the subdirectories left."""

    name: str
    identity: tuple[int, int]
    pending: list[str] = field(default_factory=list)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it; a missing ``path`` is no error. Blocking.

    Raises ``OSError`` for what cannot be removed (an immutable file, a mount point): what could
    be removed until then is gone.
    """
    try:
        parent_fd = os.open(path.parent, LIST_FLAGS)
    except FileNotFoundError:
        return
    try:
        remove_entry(path.name, parent_fd)
    finally:
        os.close(parent_fd)


def remove_or_log(path: Path) -> bool:
    """``remove_tree``, but what cannot be removed is logged, not raised: whether ``path`` is gone."""
    try:
        remove_tree(path)
    except OSError as exc:
        log.error("cannot remove path=%s error=%s", path, exc.strerror or exc)
        return False
    return True


def remove_entry(name: str, dir_fd: int) -> None:
    """Remove the entry ``name`` of the directory ``dir_fd``: a file, a link, or a whole tree."""
    try:
        status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(status.st_mode):
        if status.st_dev == os.fstat(dir_fd).st_dev:  # else a mount point: rmdir says EBUSY
            _empty(name, dir_fd, status.st_dev)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _empty(name: str, parent_fd: int, device: int) -> None:
    """Empty the directory ``name`` of ``parent_fd`` (on ``device``), depth first, in a loop."""
    fd = os.open(name, LIST_FLAGS, dir_fd=parent_fd)
    try:
        levels = [_Level(name, _identity(fd), _clear_files(fd, device))]
        while levels:
            level = levels[-1]
            if level.pending:
                child = level.pending.pop()
                try:
                    child_fd = os.open(child, LIST_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                os.close(fd)
                fd = child_fd
                levels.append(_Level(child, _identity(fd), _clear_files(fd, device)))
                continue
            levels.pop()
            if not levels:
                break
            up = os.open("..", LIST_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            if _identity(fd) != levels[-1].identity:
                raise OSError(errno.ESTALE, f"{name}: a directory was moved while it was being removed")
            os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)


def _clear_files(fd: int, device: int) -> list[str]:
    """Unlink every entry of the directory ``fd`` but its subdirectories; their names.

    A subdirectory on another device is a mount point: it is left, and removing its parent fails.
    """
    subdirectories = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
            elif entry.stat(follow_symlinks=False).st_dev == device:
                subdirectories.append(entry.name)
    return subdirectories


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino
