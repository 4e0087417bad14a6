"""Layers applied onto a real directory: change sets, whiteouts, links, and hostile entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faasd.errors import ImageTooLarge, InvalidImage, UnsafeArchive
from faasd.images.unpack import UnpackLimits, apply_layers
from tests.unit.images.layers import Entry, open_layer

LIMITS = UnpackLimits(max_bytes=1 << 20)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The rootfs, with a sentinel directory beside it that no entry may touch."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("untouched")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    return rootfs


def apply(root: Path, *layers: list[Entry], limits: UnpackLimits = LIMITS) -> None:
    apply_layers((open_layer(entries) for entries in layers), root, limits)


def snapshot(directory: Path) -> dict[str, str]:
    found = {}
    for path in sorted(directory.rglob("*")):
        relative = str(path.relative_to(directory))
        if path.is_symlink():
            found[relative] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[relative] = "dir"
        else:
            found[relative] = path.read_text()
    return found


def test_files_dirs_symlinks_and_metadata(root: Path) -> None:
    apply(
        root,
        [("etc", "dir", ""), ("etc/motd", "file", "hi"), ("bin/sh", "file", "#!"), ("link", "symlink", "/etc/motd")],
    )
    assert snapshot(root) == {"bin": "dir", "bin/sh": "#!", "etc": "dir", "etc/motd": "hi", "link": "-> /etc/motd"}
    assert (root / "etc" / "motd").stat().st_mode & 0o777 == 0o644
    assert (root / "etc").stat().st_mtime == 1_600_000_000, "directory mtimes are set after their contents"


def test_later_layers_replace_files_and_types(root: Path) -> None:
    apply(
        root,
        [("a", "file", "one"), ("b", "dir", ""), ("b/inner", "file", "x"), ("c", "symlink", "a")],
        [("a", "dir", ""), ("b", "file", "now a file"), ("c", "file", "was a link")],
    )
    assert snapshot(root) == {"a": "dir", "b": "now a file", "c": "was a link"}


def test_whiteout_removes_lower_entries(root: Path) -> None:
    apply(
        root,
        [("d/keep", "file", "k"), ("d/gone", "file", "g"), ("tree/x/y", "file", "y")],
        [("d/.wh.gone", "file", ""), (".wh.tree", "file", "")],
    )
    assert snapshot(root) == {"d": "dir", "d/keep": "k"}


def test_opaque_dir_hides_lower_content_but_keeps_its_own_layer(root: Path) -> None:
    apply(
        root,
        [("d/old", "file", "old"), ("d/sub/deep", "file", "deep")],
        [("d/before", "file", "b"), ("d/.wh..wh..opq", "file", ""), ("d/after", "file", "a")],
    )
    assert snapshot(root) == {"d": "dir", "d/after": "a", "d/before": "b"}


def test_whiteout_of_something_missing_is_fine(root: Path) -> None:
    apply(root, [(".wh.nothing", "file", ""), ("no/such/.wh.dir", "file", "")])
    assert snapshot(root) == {}


def test_hardlinks_inside_the_root(root: Path) -> None:
    apply(root, [("bin/busybox", "file", "bb"), ("bin/sh", "hardlink", "bin/busybox")])
    assert (root / "bin" / "sh").stat().st_ino == (root / "bin" / "busybox").stat().st_ino


def test_rewriting_a_hardlinked_file_does_not_change_its_twin(root: Path) -> None:
    apply(root, [("a", "file", "shared"), ("b", "hardlink", "a")], [("b", "file", "new")])
    assert (root / "a").read_text() == "shared" and (root / "b").read_text() == "new"


def test_devices_and_fifos_are_skipped(root: Path) -> None:
    apply(root, [("dev/null", "chr", ""), ("pipe", "fifo", ""), ("ok", "file", "ok")])
    assert snapshot(root) == {"ok": "ok"}


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_ownership_is_kept(root: Path) -> None:
    import io
    import tarfile

    from tests.unit.images.layers import layer_bytes

    data = layer_bytes([("owned", "file", "x")])
    stream = tarfile.open(fileobj=io.BytesIO(data), mode="r")
    member = stream.getmember("owned")
    member.uid, member.gid = 1234, 5678
    rebuilt = io.BytesIO()
    with tarfile.open(fileobj=rebuilt, mode="w") as tar:
        tar.addfile(member, stream.extractfile(member))
    apply_layers([tarfile.open(fileobj=io.BytesIO(rebuilt.getvalue()), mode="r|")], root, LIMITS)
    info = (root / "owned").stat()
    assert (info.st_uid, info.st_gid) == (1234, 5678)


HOSTILE: list[tuple[str, list[list[Entry]], type[Exception], str]] = [
    ("dotdot", [[("../outside/secret", "file", "pwned")]], UnsafeArchive, "climbs out"),
    ("deep dotdot", [[("../../../../../tmp/x", "file", "pwned")]], UnsafeArchive, "climbs out"),
    ("dotdot in the middle", [[("a/../../outside/secret", "file", "pwned")]], UnsafeArchive, "climbs out"),
    (
        "write through a symlink, same layer",
        [[("up", "symlink", "../outside"), ("up/secret", "file", "pwned")]],
        UnsafeArchive,
        "symlink 'up'",
    ),
    (
        "write through a symlink, later layer",
        [[("up", "symlink", "/")], [("up/outside/secret", "file", "pwned")]],
        UnsafeArchive,
        "symlink 'up'",
    ),
    (
        "absolute symlink then a write under it",
        [[("etc", "symlink", "/etc")], [("etc/passwd", "file", "pwned")]],
        UnsafeArchive,
        "symlink 'etc'",
    ),
    ("symlink named .", [[(".", "symlink", "/")]], UnsafeArchive, "rootfs itself"),
    ("symlink named /", [[("/", "symlink", "/")]], UnsafeArchive, "rootfs itself"),
    ("hardlink to outside", [[("x", "hardlink", "../outside/secret")]], UnsafeArchive, "climbs out"),
    ("hardlink to a missing path", [[("x", "hardlink", "nothing/here")]], InvalidImage, "No such file"),
    ("hardlink to a missing file", [[("x", "hardlink", "nothing")]], InvalidImage, "does not exist"),
    (
        "hardlink through a symlink",
        [[("up", "symlink", "../outside"), ("x", "hardlink", "up/secret")]],
        UnsafeArchive,
        "symlink 'up'",
    ),
    (
        "whiteout through a symlink",
        [[("up", "symlink", "../outside")], [("up/.wh.secret", "file", "")]],
        UnsafeArchive,
        "symlink 'up'",
    ),
    (
        "opaque through a symlink",
        [[("up", "symlink", "../outside")], [("up/.wh..wh..opq", "file", "")]],
        UnsafeArchive,
        "symlink 'up'",
    ),
    ("whiteout of ..", [[(".wh...", "file", "")]], UnsafeArchive, "malformed whiteout"),
    ("file where a directory is needed", [[("f", "file", "x"), ("f/g", "file", "y")]], InvalidImage, "not a directory"),
    ("name over NAME_MAX", [[("a" * 300, "file", "x")]], InvalidImage, "File name too long"),
]


@pytest.mark.parametrize("layers, error, message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_entries_are_refused_and_nothing_leaves_the_root(
    root: Path, layers: list[list[Entry]], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        apply(root, *layers)
    assert snapshot(root.parent / "outside") == {"secret": "untouched"}
    assert not Path("/tmp/x").exists()


def test_absolute_names_land_inside(root: Path) -> None:
    apply(root, [("/etc/hostname", "file", "inside")])
    assert snapshot(root) == {"etc": "dir", "etc/hostname": "inside"}


def test_paths_deeper_than_path_max_unpack(root: Path) -> None:
    deep = "/".join(["d" * 200] * 25) + "/leaf"
    apply(root, [(deep, "file", "deep")])
    fd = os.open(root, os.O_RDONLY)
    for part in deep.split("/")[:-1]:
        next_fd = os.open(part, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    assert os.stat("leaf", dir_fd=fd).st_size == 4
    os.close(fd)


def test_byte_budget_spans_layers(root: Path) -> None:
    limits = UnpackLimits(max_bytes=10)
    with pytest.raises(ImageTooLarge, match="more than 10 bytes"):
        apply(root, [("a", "file", "123456")], [("b", "file", "123456")], limits=limits)


def test_entry_budget(root: Path) -> None:
    with pytest.raises(ImageTooLarge, match="more than 3 entries"):
        apply(root, [(f"f{i}", "file", "") for i in range(5)], limits=UnpackLimits(max_bytes=100, max_entries=3))


def test_errors_name_the_layer_and_entry(root: Path) -> None:
    with pytest.raises(UnsafeArchive, match=r"layer 2: entry '\.\./x' climbs out"):
        apply(root, [("ok", "file", "")], [("../x", "file", "")])
