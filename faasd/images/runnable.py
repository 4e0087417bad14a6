"""What an image config asks of its own rootfs, checked at deploy: its User's ids, its WorkingDir.

Both are looked up in the mounted, read-only rootfs, which came from an untrusted archive:

- ``User`` names are read from the image's /etc/passwd and /etc/group, opened without following
  a symlink, no larger than ``MAX_ACCOUNTS_BYTES`` and read a line of at most
  ``MAX_ACCOUNTS_LINE`` at a time (a 400 MB file without a newline costs nothing); ids must fit
  the user namespace containers run in (``USERNS_IDS``), or runc could never switch to them.
- ``WorkingDir`` must be a directory of the image, found by the kernel inside the rootfs
  (``openat2`` with ``RESOLVE_IN_ROOT``: symlinks resolve as they would in the container, ``..``
  stops at its root, no magic link of /proc is followed), rather than left for runc to find at
  the first request. /proc, /dev and /tmp are empty mount points here, so a WorkingDir below one
  of them (``/proc/self/fd/N``, the shape of CVE-2024-21626) is refused.
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

from faasd.config import USERNS_IDS
from faasd.errors import ImageTooLarge, InvalidImage

MAX_ACCOUNTS_BYTES = 4 << 20
MAX_ACCOUNTS_LINE = 64 << 10
MAX_ID_DIGITS = 20  # int() of more would be slow, and no such id maps
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# linux/openat2.h; openat2 has the same number on every architecture (asm-generic/unistd.h).
SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def resolve_user(rootfs: Path, user: str) -> tuple[int, int]:
    """The numeric uid and gid for an image's ``User`` ("name", "uid", "name:group", "uid:gid")."""
    name, _, group = user.partition(":")
    uid, gid = 0, 0
    if name:
        number = _number(name)
        if number is not None:
            uid = number
        else:
            entry = _lookup(rootfs, "passwd", name)
            uid, gid = int(entry[2]), int(entry[3])
    if group:
        number = _number(group)
        gid = number if number is not None else int(_lookup(rootfs, "group", group)[2])
    if not (uid < USERNS_IDS and gid < USERNS_IDS):
        raise InvalidImage(
            f"the image's User {user!r} gives uid {uid} gid {gid}, outside the container's user namespace "
            f"(ids 0 to {USERNS_IDS - 1}): no process could run as it"
        )
    return uid, gid


def check_working_dir(rootfs: Path, path: str) -> None:
    """Refuse a WorkingDir that is no directory of the image (see the module docstring)."""
    if not path:
        return
    root_fd = os.open(rootfs, DIR_FLAGS)
    try:
        fd = open_in_root(root_fd, path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidImage(
            f"the image config's WorkingDir {path!r} is no directory in the image ({os.strerror(exc.errno or 0)})"
        ) from exc
    finally:
        os.close(root_fd)
    os.close(fd)


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """``openat2`` of ``path`` as if ``root_fd`` were "/": resolved by the kernel inside it."""
    how = _OpenHow(flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
    fd = _libc.syscall(SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _number(text: str) -> int | None:
    """A numeric id (ASCII digits only: int() would take "²"), or None for a name."""
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= MAX_ID_DIGITS else 1 << 64


def _lookup(rootfs: Path, database: str, key: str) -> list[str]:
    """The fields of ``key``'s entry in the image's /etc/``database``, ids checked to be numbers."""
    fd = _open_database(rootfs, database, key)
    with os.fdopen(fd, "rb") as lines:
        size = os.fstat(lines.fileno()).st_size
        if size > MAX_ACCOUNTS_BYTES:
            raise ImageTooLarge(
                f"the image's /etc/{database} is larger than {MAX_ACCOUNTS_BYTES} bytes ({size}): too large to look "
                f"its User {key!r} up in"
            )
        needed = 4 if database == "passwd" else 3  # name:password:uid:gid, or name:password:gid
        taken = 0
        while line := lines.readline(MAX_ACCOUNTS_LINE + 1):
            taken += len(line)
            if len(line) > MAX_ACCOUNTS_LINE or taken > MAX_ACCOUNTS_BYTES:
                raise ImageTooLarge(f"the image's /etc/{database} has a line longer than {MAX_ACCOUNTS_LINE} bytes")
            fields = line.rstrip(b"\n").decode("utf-8", "replace").split(":")
            if len(fields) >= needed and fields[0] == key and all(_number(i) is not None for i in fields[2:needed]):
                return fields
    raise InvalidImage(f"the image's User names {key!r}, which is not in its /etc/{database}")


def _open_database(rootfs: Path, database: str, key: str) -> int:
    """The image's /etc/``database``, opened without following a symlink: a regular file."""
    try:
        root_fd = os.open(rootfs, DIR_FLAGS)
        try:
            etc_fd = os.open("etc", DIR_FLAGS, dir_fd=root_fd)
            try:
                fd = os.open(database, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=etc_fd)
            finally:
                os.close(etc_fd)
        finally:
            os.close(root_fd)
    except OSError as exc:
        raise InvalidImage(f"the image's User names {key!r} but /etc/{database} cannot be read") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidImage(f"the image's User names {key!r} but /etc/{database} is not a file")
    return fd
