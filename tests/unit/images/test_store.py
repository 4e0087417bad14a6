"""Imports land whole or not at all; users resolve from the image's own files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from faasd.errors import InvalidImage, RuntimeFailure, UnsafeArchive
from faasd.images.store import ImageStore, resolve_user
from faasd.images.unpack import UnpackLimits
from tests.unit.images.layers import Entry, entry_info, layer_bytes, tar_bytes
from tools.build_image import write_docker_archive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking keeps ownership, which needs root")
CONFIG = {"config": {"Cmd": ["/bin/app"], "User": "app"}}
BASE = 2_000_000_000
PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n"


def image(tmp_path: Path, entries: list[Entry], config: dict = CONFIG) -> Path:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(layer_bytes(entries))
    out = tmp_path / "image.tar"
    write_docker_archive(out, [layer], config, "t:1")
    return out


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images", UnpackLimits(max_bytes=1 << 20, max_entries=1000), id_base=BASE)


def test_import_places_a_complete_rootfs(tmp_path: Path, store: ImageStore) -> None:
    imported = store.import_image(
        image(tmp_path, [("etc/passwd", "file", PASSWD), ("bin/app", "file", "x")]), "fn", 1, None
    )
    rootfs = store.rootfs("fn", 1)
    assert (rootfs / "bin" / "app").read_text() == "x"
    assert (imported.uid, imported.gid) == (1000, 1001)
    assert imported.config.cmd == ("/bin/app",)
    assert oct((rootfs / "tmp").stat().st_mode & 0o7777) == "0o1777", "runc copies /tmp's mode to its tmpfs"
    assert (rootfs / "control.sock").is_file()
    assert sorted(p.name for p in (tmp_path / "images" / "fn").iterdir()) == ["1"]


def test_the_rootfs_belongs_to_the_user_namespace(tmp_path: Path, store: ImageStore) -> None:
    layer = tmp_path / "layer.tar"
    members = [entry_info("etc/passwd", "file", PASSWD), entry_info("app/data", "file", "x")]
    members[1][0].uid, members[1][0].gid = 1000, 1001
    layer.write_bytes(tar_bytes(members))
    write_docker_archive(tmp_path / "image.tar", [layer], CONFIG, "t:1")
    imported = store.import_image(tmp_path / "image.tar", "fn", 1, None)
    assert (imported.uid, imported.gid) == (1000, 1001), "the registry keeps container-side ids"

    rootfs = store.rootfs("fn", 1)
    owners = {
        path: (os.lstat(rootfs / path).st_uid, os.lstat(rootfs / path).st_gid)
        for path in ("", "etc", "etc/passwd", "app", "app/data", "proc", "dev", "sys", "tmp", "control.sock")
    }
    assert owners == {path: (BASE, BASE) for path in owners} | {"app/data": (BASE + 1000, BASE + 1001)}
    for above in (tmp_path / "images" / "fn", tmp_path / "images" / "fn" / "1"):
        assert stat.S_IMODE(above.stat().st_mode) == 0o711, f"{above}: the mapped root must get through"


def test_only_a_rootfs_of_the_user_namespace_is_servable(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, [("etc/passwd", "file", PASSWD), ("bin/app", "file", "x")]), "fn", 1, None)
    store.check_servable("fn", 1)
    os.chown(store.rootfs("fn", 1), 0, 0)  # as a faasd before user namespaces left it
    with pytest.raises(RuntimeFailure, match="written by an older faasd .owner 0, not 2000000000.: deploy it again"):
        store.check_servable("fn", 1)
    with pytest.raises(RuntimeFailure, match="the rootfs of version 2 is missing"):
        store.check_servable("fn", 2)


def test_failed_import_leaves_nothing(tmp_path: Path, store: ImageStore) -> None:
    with pytest.raises(UnsafeArchive):
        store.import_image(image(tmp_path, [("ok", "file", "x"), ("../escape", "file", "x")]), "fn", 1, None)
    assert not (tmp_path / "images" / "fn").exists()


def test_failed_redeploy_keeps_the_old_version(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, [("etc/passwd", "file", PASSWD)]), "fn", 1, None)
    with pytest.raises(InvalidImage, match="neither Entrypoint nor Cmd"):
        store.import_image(image(tmp_path, [("x", "file", "")], {"config": {}}), "fn", 2, None)
    assert sorted(p.name for p in (tmp_path / "images" / "fn").iterdir()) == ["1"]


def test_sweep_removes_half_imports_and_unknown_versions(tmp_path: Path, store: ImageStore) -> None:
    for path in ("fn/1/rootfs", "fn/2/rootfs", "fn/.tmp-3-abc/rootfs", "gone/1/rootfs"):
        (tmp_path / "images" / path).mkdir(parents=True)
    removed = store.sweep({"fn": {1}})
    assert sorted(p.relative_to(tmp_path / "images").as_posix() for p in removed) == ["fn/.tmp-3-abc", "fn/2", "gone"]
    assert (tmp_path / "images" / "fn" / "1").is_dir()


@pytest.mark.parametrize(
    "user, expected",
    [("", (0, 0)), ("1000", (1000, 0)), ("1000:7", (1000, 7)), ("app", (1000, 1001)), ("app:staff", (1000, 50))],
)
def test_resolve_user(tmp_path: Path, user: str, expected: tuple[int, int]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    assert resolve_user(tmp_path, user) == expected


def test_resolve_user_never_follows_a_symlinked_passwd(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidImage, match="cannot be read"):
        resolve_user(tmp_path, "root")


def test_unknown_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    with pytest.raises(InvalidImage, match="'nobody', which is not in its /etc/passwd"):
        resolve_user(tmp_path, "nobody")
