"""An image's User and WorkingDir, looked up in its own rootfs with bounded reads, inside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faasd.errors import ImageTooLarge, InvalidImage
from faasd.images.runnable import MAX_ACCOUNTS_BYTES, MAX_ACCOUNTS_LINE, check_working_dir, resolve_user

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\nodd:x:1002:abc::/:/bin/sh\n"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    return tmp_path


@pytest.mark.parametrize(
    "user, expected",
    [
        ("", (0, 0)),
        ("1000", (1000, 0)),
        ("1000:7", (1000, 7)),
        ("app", (1000, 1001)),
        ("app:staff", (1000, 50)),
        (":50", (0, 50)),
        ("65535:65535", (65535, 65535)),
    ],
)
def test_resolve_user(rootfs: Path, user: str, expected: tuple[int, int]) -> None:
    assert resolve_user(rootfs, user) == expected


@pytest.mark.parametrize(
    "user, error, message",
    [
        ("nobody", InvalidImage, "'nobody', which is not in its /etc/passwd"),
        ("app:wheel", InvalidImage, "'wheel', which is not in its /etc/group"),
        ("odd", InvalidImage, "'odd', which is not in its /etc/passwd"),  # its gid is no number
        ("\u00b2", InvalidImage, "which is not in its /etc/passwd"),  # a digit to str.isdigit, not to int
        ("65536", InvalidImage, "uid 65536 gid 0, outside the container's user namespace"),
        ("0:65536", InvalidImage, "gid 65536, outside"),
        ("9" * 5000, InvalidImage, "outside the container's user namespace"),
    ],
)
def test_a_user_no_process_could_run_as_is_refused(rootfs: Path, user: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_user(rootfs, user)


def test_resolve_user_never_follows_a_symlinked_passwd(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidImage, match="cannot be read"):
        resolve_user(rootfs, "root")


def test_a_passwd_over_its_limit_is_refused_unread(rootfs: Path) -> None:
    with open(rootfs / "etc" / "passwd", "wb") as passwd:
        passwd.truncate(400_000_000)  # sparse, without a newline
    with pytest.raises(ImageTooLarge, match=f"/etc/passwd is larger than {MAX_ACCOUNTS_BYTES} bytes"):
        resolve_user(rootfs, "app")


def test_a_line_over_its_limit_is_refused(rootfs: Path) -> None:
    (rootfs / "etc" / "group").write_bytes(b"staff:x:50:" + b"u," * MAX_ACCOUNTS_LINE + b"\n")
    with pytest.raises(ImageTooLarge, match=f"/etc/group has a line longer than {MAX_ACCOUNTS_LINE} bytes"):
        resolve_user(rootfs, "app:staff")


@pytest.mark.parametrize("path", ["", "/", "/app", "/link", "/link/sub", "/up"])
def test_a_working_dir_inside_the_image_is_taken(rootfs: Path, path: str) -> None:
    (rootfs / "app" / "sub").mkdir(parents=True)
    (rootfs / "link").symlink_to("app")
    (rootfs / "up").symlink_to("../../../../app")  # ".." stops at the image's root, as in the container
    check_working_dir(rootfs, path)


@pytest.mark.parametrize("path", ["/nowhere", "/etc/passwd", "/out", "/proc/self/fd/3", "/abs"])
def test_a_working_dir_that_is_no_directory_of_the_image_is_refused(rootfs: Path, path: str) -> None:
    outside = rootfs.parent / f"{rootfs.name}-outside"
    outside.mkdir()
    (rootfs / "out").symlink_to(os.path.relpath(outside, rootfs))  # climbs out on the host, not inside
    (rootfs / "abs").symlink_to(outside)
    (rootfs / "proc").mkdir()
    with pytest.raises(InvalidImage, match=f"WorkingDir '{path}' is no directory in the image"):
        check_working_dir(rootfs, path)
