"""Imports land whole or not at all, sharing layers; users resolve from the image's own files."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.errors import InvalidImage, RuntimeFailure, UnsafeArchive
from faasd.images import overlay
from faasd.images.store import ImageStore
from faasd.images.unpack import UnpackLimits
from tests.unit.images.layers import Entry, entry_info, layer_bytes, make_deep_tree, tar_bytes
from tools.build_image import write_docker_archive

pytestmark = pytest.mark.needs_root  # unpacking keeps ownership
CONFIG = {"config": {"Cmd": ["/bin/app"], "User": "app"}}
BASE = 2_000_000_000
PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n"


def image(tmp_path: Path, *layers: list[Entry], config: dict = CONFIG, name: str = "image") -> Path:
    """A docker-save archive of ``layers``, bottom first."""
    paths = []
    for number, entries in enumerate(layers):
        paths.append(tmp_path / f"{name}-layer-{number}.tar")
        paths[-1].write_bytes(layer_bytes(entries))
    out = tmp_path / f"{name}.tar"
    write_docker_archive(out, paths, config, "t:1")
    return out


BASE_LAYER: list[Entry] = [("etc/passwd", "file", PASSWD), ("lib/base.so", "file", "base"), ("etc/old", "file", "o")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    store = ImageStore(tmp_path / "images", UnpackLimits(max_bytes=1 << 20, max_entries=1000), id_base=BASE)
    yield store
    store.unmount_all()


def layer_dirs(tmp_path: Path) -> list[Path]:
    layers = tmp_path / "layers" / "sha256"
    return sorted(layers.iterdir()) if layers.is_dir() else []


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


def test_only_a_mounted_rootfs_of_the_user_namespace_is_servable(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, [("etc/passwd", "file", PASSWD), ("bin/app", "file", "x")]), "fn", 1, None)
    store.check_servable("fn", 1)
    store.unmount_all()
    with pytest.raises(RuntimeFailure, match="the rootfs of version 1 is not mounted"):
        store.check_servable("fn", 1)
    store.rootfs("fn", 2).mkdir(parents=True)  # a plain rootfs, as a faasd before user namespaces left it
    with pytest.raises(RuntimeFailure, match="written by an older faasd .owner 0, not 2000000000.: deploy it again"):
        store.check_servable("fn", 2)
    with pytest.raises(RuntimeFailure, match="the rootfs of version 3 is missing"):
        store.check_servable("fn", 3)


def test_failed_import_leaves_nothing(tmp_path: Path, store: ImageStore) -> None:
    with pytest.raises(UnsafeArchive, match="layer 2: entry '../escape'"):
        store.import_image(image(tmp_path, [("ok", "file", "x")], [("../escape", "file", "x")]), "fn", 1, None)
    assert not (tmp_path / "images" / "fn").exists()
    assert layer_dirs(tmp_path) == [], "not even the good layer it brought"
    assert os.listdir(tmp_path / "layers") == ["sha256"]


def test_failed_redeploy_keeps_the_old_version(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, [("etc/passwd", "file", PASSWD)]), "fn", 1, None)
    with pytest.raises(InvalidImage, match="neither Entrypoint nor Cmd"):
        store.import_image(image(tmp_path, [("x", "file", "")], config={"config": {}}), "fn", 2, None)
    assert sorted(p.name for p in (tmp_path / "images" / "fn").iterdir()) == ["1"]


def test_sweep_removes_half_imports_and_unknown_versions(tmp_path: Path, store: ImageStore) -> None:
    for path in ("fn/1/rootfs", "fn/2/rootfs", "fn/.tmp-3-abc/rootfs", "gone/1/rootfs"):
        (tmp_path / "images" / path).mkdir(parents=True)
    removed = store.sweep({"fn": {1}})
    assert sorted(p.relative_to(tmp_path / "images").as_posix() for p in removed) == ["fn/.tmp-3-abc", "fn/2", "gone"]
    assert (tmp_path / "images" / "fn" / "1").is_dir()


def test_the_sweep_logs_what_it_cannot_remove_and_goes_on(
    tmp_path: Path, store: ImageStore, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = tmp_path / "layers" / ".tmp-gone-stuck"
    (stuck / "sub").mkdir(parents=True)
    (stuck / "sub" / "immutable").write_text("x")
    subprocess.run(["chattr", "+i", str(stuck / "sub" / "immutable")], check=True)
    deep = tmp_path / "images" / "unknown" / "1" / "top"
    deep.mkdir(parents=True)
    make_deep_tree(deep, 1500)
    try:
        removed = store.sweep({})
        assert removed == [tmp_path / "images" / "unknown"], "the deep tree went, the immutable file stayed"
        assert stuck.exists()
        assert f"cannot remove path={stuck} error=Operation not permitted" in caplog.text
    finally:
        subprocess.run(["chattr", "-i", str(stuck / "sub" / "immutable")], check=True)


def test_an_image_of_no_layers_mounts(tmp_path: Path, store: ImageStore) -> None:
    """overlayfs takes no fewer than two lower layers without an upper one."""
    store.import_image(image(tmp_path, config={"config": {"Cmd": ["/control.sock"]}}), "bare", 1, None)
    store.check_servable("bare", 1)
    assert {"proc", "dev", "sys", "tmp", "control.sock"} <= set(os.listdir(store.rootfs("bare", 1)))
    store.remove_function("bare")
    assert overlay.mounts_below(tmp_path) == []


def test_a_second_image_on_the_same_base_unpacks_only_its_own_layer(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, BASE_LAYER, [("bin/app", "file", "one")], name="one"), "one", 1, None)
    before = {path: path.stat().st_ino for path in layer_dirs(tmp_path)}
    second = image(tmp_path, BASE_LAYER, [("bin/app", "file", "two")], name="two")
    store.import_image(second, "two", 1, None)
    store.import_image(second, "two", 2, None)
    after = {path: path.stat().st_ino for path in layer_dirs(tmp_path)}
    assert len(before) == 2 and len(after) == 3, "one new layer for two imports of the second image"
    assert all(after[path] == inode for path, inode in before.items()), "the base was not unpacked again"
    assert (store.rootfs("one", 1) / "bin" / "app").read_text() == "one"
    assert (store.rootfs("two", 2) / "bin" / "app").read_text() == "two"
    assert (store.rootfs("two", 2) / "lib" / "base.so").read_text() == "base"
    with pytest.raises(OSError, match="Read-only file system"):
        (store.rootfs("two", 2) / "lib" / "base.so").write_text("changed")


def test_removals_free_the_layers_no_version_lists(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, BASE_LAYER, [("bin/app", "file", "one")], name="one"), "one", 1, None)
    store.import_image(image(tmp_path, BASE_LAYER, [("bin/app", "file", "two")], name="two"), "two", 1, None)
    store.import_image(image(tmp_path, BASE_LAYER, [("bin/app", "file", "v2")], name="v2"), "two", 2, None)
    assert len(layer_dirs(tmp_path)) == 4
    store.remove_version("two", 1)
    assert len(layer_dirs(tmp_path)) == 3
    store.remove_function("one")
    assert len(layer_dirs(tmp_path)) == 2, "the base stays: version 2 of two lists it"
    assert (store.rootfs("two", 2) / "lib" / "base.so").read_text() == "base"
    store.remove_function("two")
    assert layer_dirs(tmp_path) == []
    assert overlay.mounts_below(tmp_path) == []


def test_whiteouts_and_opaque_dirs_hide_lower_layers_in_the_rootfs(tmp_path: Path, store: ImageStore) -> None:
    upper: list[Entry] = [("etc/.wh.old", "file", ""), ("lib/.wh..wh..opq", "file", ""), ("lib/new.so", "file", "n")]
    store.import_image(image(tmp_path, BASE_LAYER, upper), "fn", 1, None)
    rootfs = store.rootfs("fn", 1)
    assert sorted(os.listdir(rootfs / "etc")) == ["passwd"]
    assert sorted(os.listdir(rootfs / "lib")) == ["new.so"]


def test_restart_mounts_every_registered_version_again(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, BASE_LAYER, name="a"), "fn", 1, None)
    store.import_image(image(tmp_path, BASE_LAYER, [("bin/app", "file", "x")], name="b"), "fn", 2, None)
    store.mount_all({"fn": {1, 2}})  # already mounted: nothing changes
    assert len(overlay.mounts_below(tmp_path)) == 2
    store.unmount_all()
    assert overlay.mounts_below(tmp_path) == []
    restarted = ImageStore(tmp_path / "images", UnpackLimits(max_bytes=1 << 20, max_entries=1000), id_base=BASE)
    assert restarted.sweep({"fn": {1, 2}}) == []
    restarted.mount_all({"fn": {1, 2}})
    assert (restarted.rootfs("fn", 2) / "bin" / "app").read_text() == "x"
    restarted.check_servable("fn", 1)


def test_sweep_after_a_crash_unmounts_and_removes_what_no_version_lists(tmp_path: Path, store: ImageStore) -> None:
    store.import_image(image(tmp_path, BASE_LAYER, name="a"), "kept", 1, None)
    store.import_image(image(tmp_path, BASE_LAYER, [("bin/app", "file", "x")], name="b"), "gone", 1, None)
    (tmp_path / "layers" / ".tmp-half").mkdir()  # a layer a crash cut short
    removed = store.sweep({"kept": {1}})
    assert tmp_path / "images" / "gone" in removed and tmp_path / "layers" / ".tmp-half" in removed
    assert overlay.mounts_below(tmp_path) == [store.rootfs("kept", 1)]
    assert len(layer_dirs(tmp_path)) == 1
    assert os.listdir(tmp_path / "layers") == ["sha256"]


def test_two_imports_of_one_new_layer_at_once_keep_one_copy(tmp_path: Path, store: ImageStore) -> None:
    big: list[Entry] = [("etc/passwd", "file", PASSWD)] + [(f"lib/f{i}", "file", "x" * 1000) for i in range(300)]
    archives = [image(tmp_path, big, [("bin/app", "file", str(n))], name=str(n)) for n in range(2)]
    errors: list[BaseException] = []

    def deploy(number: int) -> None:
        try:
            store.import_image(archives[number], f"fn{number}", 1, None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(layer_dirs(tmp_path)) == 3
    for number in range(2):
        assert len(os.listdir(store.rootfs(f"fn{number}", 1) / "lib")) == 300
    assert [p.name for p in (tmp_path / "layers").iterdir()] == ["sha256"], "the loser's copy is gone"
