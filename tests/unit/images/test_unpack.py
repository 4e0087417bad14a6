"""Layers unpacked into real directories and composed by the kernel's overlayfs, as the store
does: change sets, whiteouts, links, and hostile entries."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faasd.errors import FaasError, ImageTooLarge, InsufficientStorage, InvalidImage, UnsafeArchive
from faasd.images.overlay import OPAQUE_XATTR, is_opaque, mount_layers, unmount_below, visible_layers
from faasd.images.unpack import MAX_DEPTH, PATH_MAX, Budget, UnpackLimits, apply_layer, split_name
from tests.needs import require
from tests.unit.images.layers import MTIME, Entry, entry_info, open_layer, tar_bytes

LIMITS = UnpackLimits(max_bytes=1 << 20, max_entries=10_000)
ID_BASE = 0  # owners as in the tar; tests/unit/images/test_store.py covers the shift


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """The rootfs, with a sentinel directory beside it that no entry may touch."""
    require(root=True)  # unpacking gives the directories it makes to container root (ID_BASE)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("untouched")
    (tmp_path / "layers").mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    yield rootfs
    unmount_below(rootfs)


def apply(root: Path, *layers: list[Entry] | bytes, limits: UnpackLimits = LIMITS) -> None:
    """Unpack each layer (entries, or a tar) into a directory of its own, then mount them all at
    ``root``, top first, as the store does."""
    budget = Budget(limits)
    directories: list[Path] = []
    for number, layer in enumerate(layers, start=1):
        directory = Path(tempfile.mkdtemp(dir=root.parent / "layers"))
        tar = open_layer(layer) if isinstance(layer, list) else tarfile.open(fileobj=io.BytesIO(layer), mode="r|")
        try:
            apply_layer(tar, directory, budget, ID_BASE)
        except FaasError as exc:
            raise exc.in_context(f"layer {number}") from exc
        directories.insert(0, directory)
    bottom = Path(tempfile.mkdtemp(dir=root.parent / "layers"))  # overlayfs takes two lower layers at least
    mount_layers(root, [*visible_layers(directories), bottom])


def apply_one(root: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], id_base: int = ID_BASE) -> None:
    """Unpack one layer of hand-made headers straight into ``root``."""
    apply_layer(tarfile.open(fileobj=io.BytesIO(tar_bytes(members)), mode="r|"), root, Budget(LIMITS), id_base)


def snapshot(directory: Path) -> dict[str, str]:
    """Every path below ``directory`` (links not followed): "dir", "-> target", the contents, or
    "whiteout": overlayfs lists a whiteout in a directory no lower layer has, but it opens nothing."""
    found = {}
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(parent) / name
            relative = path.relative_to(directory).as_posix()
            if not os.path.lexists(path):
                found[relative] = "whiteout"
            elif path.is_symlink():
                found[relative] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[relative] = "dir"
            else:
                found[relative] = path.read_text()
    return dict(sorted(found.items()))


def test_files_dirs_symlinks_and_metadata(root: Path) -> None:
    apply(
        root,
        [("etc", "dir", ""), ("etc/motd", "file", "hi"), ("bin/sh", "file", "#!"), ("link", "symlink", "/etc/motd")],
    )
    assert snapshot(root) == {"bin": "dir", "bin/sh": "#!", "etc": "dir", "etc/motd": "hi", "link": "-> /etc/motd"}
    motd = (root / "etc" / "motd").stat()
    assert (stat.S_IMODE(motd.st_mode), motd.st_mtime) == (0o644, MTIME)
    assert (root / "etc").stat().st_mtime == MTIME, "directory mtimes are set after their contents"
    assert (root / "link").lstat().st_mtime == MTIME


def test_set_id_bits_are_kept(root: Path) -> None:
    info, payload = entry_info("bin/su", "file", "x")
    info.mode = 0o6755
    apply_one(root, [(info, payload)])
    assert stat.S_IMODE((root / "bin" / "su").stat().st_mode) == 0o6755


@pytest.mark.needs_root  # chown to another user
def test_numeric_ownership_is_kept(root: Path) -> None:
    members = [entry_info("d", "dir"), entry_info("d/f", "file", "x"), entry_info("d/l", "symlink", "f")]
    for info, _ in members:
        info.uid, info.gid, info.uname, info.gname = 1234, 5678, "root", "root"  # names are ignored
    members[1][0].mode = 0o4755
    apply_one(root, members)
    for path in (root / "d", root / "d" / "f", root / "d" / "l"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (1234, 5678)
    assert stat.S_IMODE((root / "d" / "f").stat().st_mode) == 0o4755, "chown came before chmod"


def test_later_layers_replace_files_and_types(root: Path) -> None:
    apply(
        root,
        [("a", "file", "one"), ("b", "dir", ""), ("b/inner", "file", "x"), ("c", "symlink", "a"), ("d", "dir", "")],
        [("a", "dir", ""), ("b", "file", "now a file"), ("c", "file", "was a link"), ("d", "symlink", "a")],
    )
    assert snapshot(root) == {"a": "dir", "b": "now a file", "c": "was a link", "d": "-> a"}


def test_directory_over_directory_keeps_contents_and_takes_metadata(root: Path) -> None:
    info, _ = entry_info("d", "dir")
    info.mode = 0o711
    apply(root, [("d/keep", "file", "k")], tar_bytes([(info, None)]))
    assert snapshot(root) == {"d": "dir", "d/keep": "k"}
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o711


def test_whiteout_removes_lower_entries(root: Path) -> None:
    apply(
        root,
        [("d/keep", "file", "k"), ("d/gone", "file", "g"), ("tree/x/y", "file", "y"), ("link", "symlink", "/")],
        [("d/.wh.gone", "file", ""), (".wh.tree", "file", ""), (".wh.link", "file", "")],
    )
    assert snapshot(root) == {"d": "dir", "d/keep": "k"}


def test_whiteout_never_hides_its_own_layer(root: Path) -> None:
    apply(
        root,
        [("f", "file", "lower")],
        [(".wh.f", "file", ""), ("f", "file", "upper"), ("g", "file", "g"), (".wh.g", "file", "")],
    )
    assert snapshot(root) == {"f": "upper", "g": "g"}


def test_opaque_dir_hides_lower_content_but_keeps_its_own_layer(root: Path) -> None:
    apply(
        root,
        [("d/old", "file", "old"), ("d/sub/deep", "file", "deep"), ("d/sub/other", "file", "o"), ("e/x", "file", "x")],
        [
            ("d/before", "file", "b"),
            ("d/sub", "dir", ""),
            ("d/.wh..wh..opq", "file", ""),
            ("d/after", "file", "a"),
            ("d/sub/new", "file", "n"),
        ],
    )
    # d/sub is in the upper layer too, but d is opaque: what lower layers had under d/sub goes.
    assert snapshot(root) == {
        "d": "dir",
        "d/after": "a",
        "d/before": "b",
        "d/sub": "dir",
        "d/sub/new": "n",
        "e": "dir",
        "e/x": "x",
    }


def test_opaque_root_and_aufs_metadata(root: Path) -> None:
    apply(
        root, [("old", "file", "o")], [(".wh..wh..opq", "file", ""), ("new", "file", "n"), (".wh..wh.plnk", "dir", "")]
    )
    assert snapshot(root) == {"new": "n"}


def test_whiteouts_of_something_missing_are_fine(root: Path) -> None:
    apply(root, [(".wh.nothing", "file", ""), ("no/such/.wh.dir", "file", ""), ("none/.wh..wh..opq", "file", "")])
    assert snapshot(root) == {"no": "dir", "no/such": "dir", "no/such/dir": "whiteout", "none": "dir"}


def test_whiteouts_take_overlayfs_form_in_the_layer(root: Path) -> None:
    entries: list[Entry] = [("d/.wh.gone", "file", ""), ("e", "dir", ""), ("e/.wh..wh..opq", "file", "")]
    entries.append(("e/new", "file", ""))
    apply_layer(open_layer(entries), root, Budget(LIMITS), ID_BASE)
    gone = (root / "d" / "gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert os.getxattr(root / "e", OPAQUE_XATTR) == b"y" and not is_opaque(root / "d")
    assert sorted(os.listdir(root / "e")) == ["new"], "the markers themselves are not unpacked"


def test_a_directory_made_where_its_own_layer_deleted_hides_the_lower_one(root: Path) -> None:
    apply(root, [("d/old", "file", "o")], [(".wh.d", "file", ""), ("d", "dir", ""), ("d/new", "file", "n")])
    assert snapshot(root) == {"d": "dir", "d/new": "n"}


def test_a_whiteout_below_an_opaque_root_hides_nothing_of_what_it_hid(root: Path) -> None:
    apply(root, [("a", "file", "a")], [(".wh..wh..opq", "file", ""), ("b", "file", "b")], [("c", "file", "c")])
    assert snapshot(root) == {"b": "b", "c": "c"}, "layers below an opaque root are left out of the mount"


def test_hardlinks_inside_the_layer(root: Path) -> None:
    apply(root, [("lib/a", "file", "a")], [("bin/busybox", "file", "bb"), ("bin/sh", "hardlink", "./bin/busybox")])
    assert (root / "bin" / "sh").stat().st_ino == (root / "bin" / "busybox").stat().st_ino


def test_a_hardlink_to_a_lower_layer_is_refused(root: Path) -> None:
    with pytest.raises(InvalidImage, match="layer 2: entry 'b': hard link to 'lib/a', which does not exist in this"):
        apply(root, [("lib/a", "file", "a")], [("b", "hardlink", "lib/a")])


def test_hardlink_to_a_symlink_links_the_symlink(root: Path) -> None:
    apply(root, [("s", "symlink", "/etc/shadow"), ("t", "hardlink", "s")])
    assert os.readlink(root / "t") == "/etc/shadow"


def test_rewriting_a_hardlinked_file_does_not_change_its_twin(root: Path) -> None:
    apply(root, [("a", "file", "shared"), ("b", "hardlink", "a")], [("b", "file", "new")])
    assert (root / "a").read_text() == "shared" and (root / "b").read_text() == "new"


def test_devices_and_fifos_are_skipped(root: Path) -> None:
    apply(root, [("dev/null", "chr", ""), ("pipe", "fifo", ""), ("ok", "file", "ok")])
    assert snapshot(root) == {"ok": "ok"}


def test_the_root_keeps_its_own_metadata(root: Path) -> None:
    root.chmod(0o755)
    info, _ = entry_info("./", "dir")
    info.mode = 0o777
    apply_one(root, [(info, None)])
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


@dataclass(frozen=True)
class Refused:
    error: type[Exception]
    message: str


@dataclass(frozen=True)
class Lands:
    tree: dict[str, str]


HOSTILE: list[tuple[str, list[list[Entry]], Refused | Lands]] = [
    ("dotdot", [[("../../etc/x", "file", "pwned")]], Refused(UnsafeArchive, r"entry '\.\./\.\./etc/x': climbs out")),
    ("deep dotdot", [[("../../../../../tmp/x", "file", "pwned")]], Refused(UnsafeArchive, "climbs out")),
    ("dotdot in the middle", [[("a/../../outside/secret", "file", "pwned")]], Refused(UnsafeArchive, "climbs out")),
    # Refused even where it would stay inside: no writer emits "..", so it is never resolved.
    ("dotdot that stays inside", [[("a/../b", "file", "x")]], Refused(UnsafeArchive, "climbs out")),
    ("absolute name", [[("/abs/path", "file", "inside")]], Refused(UnsafeArchive, "'/abs/path': has an absolute name")),
    ("dot-slash name", [[("./a/./b", "file", "inside")]], Lands({"a": "dir", "a/b": "inside"})),
    (
        "write through a symlink, same layer",
        [[("up", "symlink", "../outside"), ("up/secret", "file", "pwned")]],
        Refused(UnsafeArchive, "writes through the symlink 'up'"),
    ),
    # Each layer is unpacked alone: a later layer's path through an earlier layer's symlink is
    # a real directory of its own, which hides the symlink once composed.
    (
        "write through a symlink, later layer",
        [[("up", "symlink", "../outside")], [("up/secret", "file", "pwned")]],
        Lands({"up": "dir", "up/secret": "pwned"}),
    ),
    (
        "symlink to / then a write under it (CVE-2025-45582)",
        [[("etc", "symlink", "/")], [("etc/outside/secret", "file", "pwned")]],
        Lands({"etc": "dir", "etc/outside": "dir", "etc/outside/secret": "pwned"}),
    ),
    (
        "symlink deep in the path",
        [[("a/b", "symlink", "/"), ("a/b/c/d", "dir", "")]],
        Refused(UnsafeArchive, "writes through the symlink 'a/b'"),
    ),
    (
        "directory entry over a symlink replaces the link",
        [[("up", "symlink", "../outside")], [("up", "dir", ""), ("up/secret", "file", "mine")]],
        Lands({"up": "dir", "up/secret": "mine"}),
    ),
    ("symlink named .", [[(".", "symlink", "/")]], Refused(UnsafeArchive, "would replace the rootfs itself")),
    ("symlink named ./", [[("./", "symlink", "/")]], Refused(UnsafeArchive, "would replace the rootfs itself")),
    ("symlink named /", [[("/", "symlink", "/")]], Refused(UnsafeArchive, "would replace the rootfs itself")),
    ("file named .", [[(".", "file", "x")]], Refused(UnsafeArchive, "would replace the rootfs itself")),
    ("hardlink named .", [[("f", "file", ""), (".", "hardlink", "f")]], Refused(UnsafeArchive, "rootfs itself")),
    (
        "hardlink to ../outside",
        [[("x", "hardlink", "../outside/secret")]],
        Refused(UnsafeArchive, r"hard link target '\.\./outside/secret' climbs out"),
    ),
    (
        "hardlink to an absolute path",
        [[("x", "hardlink", "/outside/secret")]],
        Refused(UnsafeArchive, "hard link target '/outside/secret' has an absolute name"),
    ),
    (
        "hardlink through a symlink",
        [[("up", "symlink", "../outside"), ("x", "hardlink", "up/secret")]],
        Refused(UnsafeArchive, "writes through the symlink 'up'"),
    ),
    ("hardlink to a directory", [[("d", "dir", ""), ("x", "hardlink", "d")]], Refused(UnsafeArchive, "directory 'd'")),
    ("hardlink to a missing path", [[("x", "hardlink", "nothing/here")]], Refused(InvalidImage, "does not exist")),
    ("hardlink to a missing file", [[("x", "hardlink", "nothing")]], Refused(InvalidImage, "does not exist")),
    ("hardlink to the root", [[("x", "hardlink", "./")]], Refused(UnsafeArchive, "the rootfs itself")),
    (
        "whiteout through a symlink",
        [[("up", "symlink", "../outside")], [("up/.wh.secret", "file", "")]],
        Lands({"up": "dir", "up/secret": "whiteout"}),
    ),
    (
        "whiteout through a symlink, same layer",
        [[("up", "symlink", "../outside"), ("up/.wh.secret", "file", "")]],
        Refused(UnsafeArchive, "writes through the symlink 'up'"),
    ),
    (
        "opaque through a symlink",
        [[("up", "symlink", "../outside")], [("up/.wh..wh..opq", "file", "")]],
        Lands({"up": "dir"}),
    ),
    (
        "opaque through a symlink, same layer",
        [[("up", "symlink", "../outside"), ("up/.wh..wh..opq", "file", "")]],
        Refused(UnsafeArchive, "writes through the symlink 'up'"),
    ),
    ("whiteout climbing out", [[("../.wh.outside", "file", "")]], Refused(UnsafeArchive, "climbs out")),
    ("whiteout of ..", [[(".wh...", "file", "")]], Refused(UnsafeArchive, "malformed whiteout")),
    ("whiteout of nothing", [[(".wh.", "file", "")]], Refused(UnsafeArchive, "malformed whiteout")),
    # tarfile ends names and link targets at a NUL, as tar does; split_name refuses one anyway.
    ("name with NUL", [[("x\0/../../outside/secret", "file", "inside")]], Lands({"x": "inside"})),
    ("symlink target with NUL", [[("l", "symlink", "t\0/../../x")]], Lands({"l": "-> t"})),
    (
        "file where a directory is needed",
        [[("f", "file", "x"), ("f/g", "file", "y")]],
        Refused(InvalidImage, "'f' is not a directory"),
    ),
    ("name over NAME_MAX", [[("a" * 300, "file", "x")]], Refused(InvalidImage, "File name too long")),
    ("name over PATH_MAX", [[("a/" * 2048, "dir", "")]], Refused(InvalidImage, "longer than PATH_MAX")),
    ("name over MAX_DEPTH", [[("a/" * MAX_DEPTH + "f", "file", "")]], Refused(InvalidImage, "levels deep")),
    ("hard link over MAX_DEPTH", [[("l", "hardlink", "a/" * MAX_DEPTH + "f")]], Refused(InvalidImage, "levels deep")),
    (
        "same file twice in a layer",
        [[("f", "file", "scanned"), ("f", "file", "run")]],
        Refused(InvalidImage, "entry 'f': appears twice in the layer"),
    ),
    (
        "a file then a symlink of the same name",
        [[("etc/passwd", "file", "x"), ("./etc/passwd", "symlink", "/outside/secret")]],
        Refused(InvalidImage, "appears twice"),
    ),
    ("a whiteout twice", [[(".wh.a", "file", ""), (".wh.a", "file", "")]], Refused(InvalidImage, "appears twice")),
    ("the same name in two layers", [[("f", "file", "old")], [("f", "file", "new")]], Lands({"f": "new"})),
    ("device node", [[("sda", "chr", "")]], Lands({})),
]


@pytest.mark.parametrize("layers, expected", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_entries_never_leave_the_root(root: Path, layers: list[list[Entry]], expected: Refused | Lands) -> None:
    if isinstance(expected, Refused):
        with pytest.raises(expected.error, match=expected.message):
            apply(root, *layers)
    else:
        apply(root, *layers)
        assert snapshot(root) == expected.tree
    assert root.is_dir() and not root.is_symlink()
    assert snapshot(root.parent / "outside") == {"secret": "untouched"}
    assert sorted(p.name for p in root.parent.iterdir()) == ["layers", "outside", "rootfs"]
    assert not Path("/tmp/x").exists() and not Path("/etc/x").exists()


@pytest.mark.parametrize("name", ["a\0b", "\0"])
def test_split_name_refuses_nul(name: str) -> None:
    with pytest.raises(UnsafeArchive, match="NUL"):
        split_name(name)


@pytest.mark.parametrize(
    "name, parts",
    [("a/b/", ["a", "b"]), ("./a//./b", ["a", "b"]), (".", []), ("/", []), ("./", []), ("", []), ("a\\..", ["a\\.."])],
)
def test_split_name(name: str, parts: list[str]) -> None:
    assert split_name(name) == parts


def test_names_up_to_path_max_unpack_and_longer_ones_are_refused(root: Path) -> None:
    deep = "/".join(["d" * 200] * 20) + "/" + "f" * 74  # "/" + deep, and its NUL: exactly PATH_MAX
    assert len(deep) + 2 == PATH_MAX
    apply(root, [(deep, "file", "deep")])
    fd = os.open(root, os.O_RDONLY)
    for part in deep.split("/")[:-1]:
        next_fd = os.open(part, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    assert os.stat("f" * 74, dir_fd=fd).st_size == 4
    os.close(fd)
    with pytest.raises(InvalidImage, match=r"entry 'd{100}…f{40}': has a name longer than PATH_MAX \(4096 bytes\)"):
        apply_layer(open_layer([(deep + "f", "file", "one byte too long")]), root.parent / "layers", Budget(LIMITS), 0)


def test_byte_budget_spans_layers(root: Path) -> None:
    with pytest.raises(ImageTooLarge, match=r"layer 2: entry 'b': the image unpacks to more than 10 bytes"):
        apply(
            root,
            [("a", "file", "123456")],
            [("b", "file", "123456")],
            limits=UnpackLimits(max_bytes=10, max_entries=10),
        )


def test_entry_budget_counts_whiteouts_too(root: Path) -> None:
    entries: list[Entry] = [(f".wh.f{i}", "file", "") for i in range(5)]
    with pytest.raises(ImageTooLarge, match="more than 3 entries"):
        apply(root, entries, limits=UnpackLimits(max_bytes=100, max_entries=3))


def test_one_budget_across_apply_layer_calls(root: Path) -> None:
    budget = Budget(UnpackLimits(max_bytes=10, max_entries=10))
    apply_layer(open_layer([("a", "file", "123456")]), root, budget, ID_BASE)
    assert budget.bytes_left == 4
    with pytest.raises(ImageTooLarge):
        apply_layer(open_layer([("b", "file", "123456")]), root, budget, ID_BASE)


def test_a_full_disk_is_insufficient_storage(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(InsufficientStorage, match="disk filled up"):
        apply(root, [("a", "file", "x")])


def test_a_broken_tar_stream_is_an_invalid_image(root: Path) -> None:
    data = bytearray(tar_bytes([entry_info("a", "file", "x" * 600), entry_info("b", "file", "y")]))
    del data[800:]  # a's header is the first 512 bytes: cut inside its contents
    with pytest.raises(InvalidImage, match="entry 'a'"):
        apply_layer(tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r|"), root, Budget(LIMITS), ID_BASE)


def test_implicit_parents_are_0755_whatever_the_umask(root: Path) -> None:
    old = os.umask(0o077)
    try:
        apply(root, [("usr/bin/tool", "file", "x")])
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "usr" / "bin").stat().st_mode) == 0o755


def test_headers_are_not_kept_while_streaming(root: Path) -> None:
    layer = open_layer([(f"f{i}", "file", "") for i in range(2000)])
    apply_layer(layer, root, Budget(LIMITS), ID_BASE)
    assert len(os.listdir(root)) == 2000
    assert layer.members == []  # type: ignore[attr-defined]


def test_owners_are_shifted_into_the_user_namespace(root: Path) -> None:
    base = 2_000_000_000
    members = [
        entry_info("etc", "dir"),
        entry_info("etc/shadow", "file", "x"),
        entry_info("usr/bin/tool", "file", "y"),  # usr and usr/bin are made on the way
        entry_info("home/app/link", "symlink", "../../etc/shadow"),
        entry_info("home/app/hard", "hardlink", "etc/shadow"),
    ]
    for info, _ in members:
        info.uid, info.gid = 1000, 42
    members[0][0].uid, members[0][0].gid = 0, 0
    apply_one(root, members, base)
    owners = {path: (os.lstat(root / path).st_uid, os.lstat(root / path).st_gid) for path in snapshot(root)}
    assert owners == {
        "etc": (base, base),
        "etc/shadow": (base + 1000, base + 42),
        "home": (base, base),
        "home/app": (base, base),
        "home/app/hard": (base + 1000, base + 42),  # the inode of etc/shadow
        "home/app/link": (base + 1000, base + 42),
        "usr": (base, base),
        "usr/bin": (base, base),
        "usr/bin/tool": (base + 1000, base + 42),
    }


@pytest.mark.parametrize("uid, gid", [(65536, 0), (0, 65536), (4_294_967_294, 0)])
def test_ids_outside_the_user_namespace_are_refused(root: Path, uid: int, gid: int) -> None:
    info, payload = entry_info("bin/app", "file", "x")
    info.uid, info.gid = uid, gid
    layer = tarfile.open(fileobj=io.BytesIO(tar_bytes([(info, payload)])), mode="r|")
    with pytest.raises(InvalidImage, match=rf"entry 'bin/app': is owned by uid {uid} gid {gid}, outside .* 0 to 65535"):
        apply_layer(layer, root, Budget(LIMITS), 2_000_000_000)


def test_the_highest_id_in_the_namespace_is_fine(root: Path) -> None:
    info, payload = entry_info("nobody", "file", "x")
    info.uid = info.gid = 65535
    apply_one(root, [(info, payload)], 1 << 20)
    assert (os.stat(root / "nobody").st_uid, os.stat(root / "nobody").st_gid) == ((1 << 20) + 65535,) * 2
