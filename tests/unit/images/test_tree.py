"""Trees of any depth are removed without recursion, following nothing, crossing no mount."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from faasd.images.tree import remove_entry, remove_tree
from tests.unit.images.layers import make_deep_tree


def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    make_deep_tree(top, 3000)
    for number in range(50):
        (top / f"wide-{number}").mkdir()
        (top / f"wide-{number}" / "file").write_text("x")
    remove_tree(top)
    assert os.listdir(tmp_path) == []


def test_symlinks_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("x")
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "dir-link").symlink_to(outside)
    (top / "file-link").symlink_to(outside / "kept")
    remove_tree(top)
    assert sorted(os.listdir(tmp_path)) == ["outside"] and (outside / "kept").read_text() == "x"


def test_a_missing_tree_is_no_error(tmp_path: Path) -> None:
    remove_tree(tmp_path / "missing")
    remove_entry("missing", os.open(tmp_path, os.O_RDONLY))


@pytest.mark.needs_root  # mounting
def test_a_mount_inside_is_not_entered(tmp_path: Path) -> None:
    mount_point = tmp_path / "top" / "mnt"
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], check=True)
    try:
        (mount_point / "kept").write_text("x")
        (tmp_path / "top" / "file").write_text("x")
        with pytest.raises(OSError) as raised:
            remove_tree(tmp_path / "top")
        assert raised.value.errno in (errno.EBUSY, errno.ENOTEMPTY)
        assert (mount_point / "kept").read_text() == "x"
        assert not (tmp_path / "top" / "file").exists(), "what could be removed is gone"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
