"""Crafted archives sent to the real daemon: each is refused with a 4xx that names the problem,
and leaves the state dir, the host and an already-deployed function as they were.

One daemon serves the whole table (small limits: --max-image-size 8M, --max-image-entries 1000);
its state is checked after every case.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import re
import socket
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Config
from faasd.images.unpack import MAX_DEPTH
from tests.integration.conftest import Daemon, daemon_range, http_get, start_daemon
from tests.unit.images.layers import Entry, entry_info, layer_bytes, tar_bytes
from tools.build_image import write_docker_archive, write_oci_archive

MAX_IMAGE_SIZE = 8 << 20
MAX_IMAGE_ENTRIES = 1000
CONFIG = {"config": {"Cmd": ["/bin/hello"]}}
KEEPER_BODY = "still serving"
PASSWD = "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\n"


@dataclass(frozen=True)
class Setting:
    """What the cases aim at: a sentinel directory outside every rootfs, and a scratch dir."""

    sentinel: Path
    scratch: Path

    def climb(self, name: str) -> str:
        """A relative name that climbs from any rootfs to ``name`` inside the sentinel."""
        return "../" * 40 + str(self.sentinel / name).lstrip("/")


def docker_image(setting: Setting, *layers: list[Entry] | bytes, config: dict[str, Any] = CONFIG) -> Path:
    """A docker-save archive of ``layers`` (entry lists, or raw layer tars), with true diff_ids."""
    paths = []
    for number, layer in enumerate(layers):
        path = setting.scratch / f"layer-{number}.tar"
        path.write_bytes(layer if isinstance(layer, bytes) else layer_bytes(layer))
        paths.append(path)
    out = setting.scratch / "image.tar"
    write_docker_archive(out, paths, config, "hostile:1")
    return out


def rewrite(archive: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy ``archive``, passing each file member through ``change`` (None drops it)."""
    out = archive.with_suffix(".changed.tar")
    with tarfile.open(archive) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None:
                data = change(member.name, data)
                if data is None:
                    continue
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


def owned_by(uid: int) -> bytes:
    info, payload = entry_info("bin/app", "file", "x")
    info.uid = uid
    return tar_bytes([(info, payload)])


def oversized_pax() -> bytes:
    info, payload = entry_info("a", "file", "x")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    return tar_bytes([(info, payload)])


def oci_image(setting: Setting, layer: bytes, tag: str) -> Path:
    """An OCI archive of one layer (gzipped in it), with true digests."""
    path = setting.scratch / "layer.tar"
    path.write_bytes(layer)
    out = setting.scratch / "image.tar"
    write_oci_archive(out, [path], CONFIG, tag)
    return out


def manifest_entry(image: Path) -> dict[str, Any]:
    """The one image entry of a docker-save archive's manifest.json."""
    with tarfile.open(image) as tar:
        return json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]


def gzip_bomb_layer(setting: Setting) -> Path:
    """A valid layer followed by 64 MiB of zeros, gzipped to about 64 KiB, in an OCI archive."""
    return oci_image(setting, layer_bytes([("bin/hello", "file", "x")]) + bytes(64 << 20), "bomb:1")


def gzip_bomb_archive(setting: Setting) -> Path:
    """A docker-save archive followed by 64 MiB of zeros, the whole gzipped."""
    image = docker_image(setting, [("bin/hello", "file", "x")])
    out = setting.scratch / "bomb.tar.gz"
    with gzip.open(out, "wb") as compressed:
        compressed.write(image.read_bytes() + bytes(64 << 20))
    return out


def oci_tampered_blob(setting: Setting) -> Path:
    out = oci_image(setting, layer_bytes([("bin/hello", "file", "x")]), "tampered:1")
    with tarfile.open(out) as tar:
        layer_blob = json.loads(tar.extractfile(_oci_manifest_name(tar)).read())["layers"][0]["digest"]  # type: ignore[union-attr]
    evil = gzip.compress(layer_bytes([("bin/hello", "file", "evil")]))
    return rewrite(out, lambda name, data: evil if name.endswith(layer_blob.removeprefix("sha256:")) else data)


def _oci_manifest_name(tar: tarfile.TarFile) -> str:
    index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    return "blobs/sha256/" + index["manifests"][0]["digest"].removeprefix("sha256:")


def duplicate_member(setting: Setting) -> Path:
    image = docker_image(setting, [("bin/hello", "file", "x")])
    with tarfile.open(image, "a") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    return image


def named_in_manifest(kind: str) -> Callable[[Setting], Path]:
    """An archive whose manifest names a ``kind`` ("Config" or layer) that is not in it."""

    def build(setting: Setting) -> Path:
        image = docker_image(setting, [("bin/hello", "file", "x")])
        entry = manifest_entry(image)
        missing = entry["Config"] if kind == "Config" else entry["Layers"][0]
        return rewrite(image, lambda name, data: None if name == missing else data)

    return build


def tampered_layer(setting: Setting) -> Path:
    image = docker_image(setting, [("bin/hello", "file", "x")])
    evil = layer_bytes([("bin/hello", "file", "evil")])
    return rewrite(image, lambda name, data: evil if name.endswith("/layer.tar") else data)


def invalid_manifest(setting: Setting) -> Path:
    image = docker_image(setting, [("bin/hello", "file", "x")])
    return rewrite(image, lambda name, data: b"[{not json" if name == "manifest.json" else data)


def configured(**config: Any) -> Callable[[Setting], Path]:
    """An image of one small layer (with an /etc/passwd and /etc/group) whose config sets ``config``."""
    entries: list[Entry] = [("bin/hello", "file", "x"), ("etc/passwd", "file", PASSWD), ("etc/group", "file", GROUP)]
    return lambda setting: docker_image(setting, entries, config={"config": {"Cmd": ["/bin/hello"], **config}})


def accounts(passwd: bytes, user: str = "app") -> Callable[[Setting], Path]:
    """An image whose ``User`` is looked up in the given /etc/passwd."""
    entries: list[Entry] = [("bin/hello", "file", "x"), ("etc/passwd", "file", passwd)]
    return lambda setting: docker_image(setting, entries, config={"config": {"Cmd": ["/bin/hello"], "User": user}})


def padded_member(member: str, size: int) -> Callable[[Setting], Path]:
    """An archive whose JSON ``member`` ("manifest.json", "config") is padded with spaces to ``size`` bytes."""

    def build(setting: Setting) -> Path:
        image = docker_image(setting, [("bin/hello", "file", "x")])
        target = manifest_entry(image)["Config"] if member == "config" else member
        return rewrite(image, lambda name, data: data + b" " * (size - len(data)) if name == target else data)

    return build


def padded_oci_index(setting: Setting) -> Path:
    out = oci_image(setting, layer_bytes([("bin/hello", "file", "x")]), "padded:1")
    return rewrite(out, lambda name, data: data + b" " * (2 << 20) if name == "index.json" else data)


def deep_tree_with_wrong_diff_id(setting: Setting) -> Path:
    """A layer 1 500 directories deep whose config states another diff_id."""
    image = docker_image(setting, [("d/" * 1500 + "f", "file", "x")])
    config = manifest_entry(image)["Config"]

    def wrong_diff_id(name: str, data: bytes) -> bytes:
        if name != config:
            return data
        document = json.loads(data)
        document["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
        return json.dumps(document).encode()

    return rewrite(image, wrong_diff_id)


@dataclass(frozen=True)
class Case:
    """One crafted archive and how the daemon must answer it."""

    name: str
    build: Callable[[Setting], Path]
    status: int
    message: str  # a regular expression the error must match
    tag: str | None = None


def layers(*entries: list[Entry]) -> Callable[[Setting], Path]:
    return lambda setting: docker_image(setting, *entries)


CASES = [
    Case(
        "dotdot-name",
        lambda s: docker_image(s, [(s.climb("pwned"), "file", "pwned")]),
        400,
        r"layer 1: entry '(\.\./)+.*pwned': climbs out of the rootfs",
    ),
    Case(
        "absolute-name",
        lambda s: docker_image(s, [(str(s.sentinel / "pwned"), "file", "pwned")]),
        400,
        "has an absolute name",
    ),
    Case(
        "symlink-then-write-same-layer",
        lambda s: docker_image(s, [("up", "symlink", str(s.sentinel)), ("up/pwned", "file", "pwned")]),
        400,
        "entry 'up/pwned': writes through the symlink 'up'",
    ),
    Case(
        "symlink-named-dot-cve-2021-29136",
        layers([(".", "symlink", "/")]),
        400,
        "entry '.': would replace the rootfs itself",
    ),
    Case("symlink-named-slash", layers([("/", "symlink", "/")]), 400, "entry '/': would replace the rootfs itself"),
    Case(
        "hardlink-to-outside",
        lambda s: docker_image(s, [("x", "hardlink", s.climb("secret"))]),
        400,
        r"hard link target .* climbs out of the rootfs",
    ),
    Case(
        "hardlink-to-outside-through-a-symlink",
        lambda s: docker_image(s, [("up", "symlink", str(s.sentinel)), ("x", "hardlink", "up/secret")]),
        400,
        "writes through the symlink 'up'",
    ),
    Case("hardlink-to-nothing", layers([("x", "hardlink", "no/such/file")]), 400, "which does not exist"),
    Case(
        "duplicate-entry-in-a-layer",
        layers([("bin/hello", "file", "scanned"), ("bin/hello", "symlink", "/etc/shadow")]),
        400,
        "entry 'bin/hello': appears twice in the layer",
    ),
    Case("duplicate-member-in-the-archive", duplicate_member, 400, "two members named 'manifest.json'"),
    Case("config-missing", named_in_manifest("Config"), 400, r"no member '[0-9a-f]{64}\.json', which its manifest"),
    Case("layer-missing", named_in_manifest("layer"), 400, r"no member '[0-9a-f]{64}/layer\.tar', which its manifest"),
    Case("oci-blob-digest-mismatch", oci_tampered_blob, 400, r"layer 1 \(blobs/sha256/.*\): blob digest mismatch"),
    Case("diff-id-mismatch", tampered_layer, 400, r"layer 1 \(.*\): diff_id mismatch"),
    Case("invalid-json", invalid_manifest, 400, "manifest.json is not valid JSON"),
    Case("gzip-bomb-layer", gzip_bomb_layer, 413, "the image's layers uncompress to more than 8388608 bytes"),
    Case("gzip-bomb-archive", gzip_bomb_archive, 413, "the archive's contents uncompress to more than 8388608 bytes"),
    Case(
        "over-max-image-size",
        lambda s: docker_image(s, gzip.compress(layer_bytes([("big", "file", bytes(9 << 20))]))),
        413,
        "entry 'big': the image unpacks to more than 8388608 bytes of files",
    ),
    Case(
        "too-many-entries",
        layers([(f"f{i}", "file", "") for i in range(MAX_IMAGE_ENTRIES + 1)]),
        413,
        f"entry 'f{MAX_IMAGE_ENTRIES}': the image has more than {MAX_IMAGE_ENTRIES} entries",
    ),
    Case("name-over-path-max", layers([("d/" * 2048 + "f", "file", "x")]), 400, "longer than PATH_MAX"),
    Case(
        "oversized-pax-header", lambda s: docker_image(s, oversized_pax()), 400, "a tar header carries 20\\d{5} bytes"
    ),
    Case("uid-outside-the-user-namespace", lambda s: docker_image(s, owned_by(65536)), 400, "uid 65536 gid 0, outside"),
    Case(
        "malformed-tag", layers([("bin/hello", "file", "x")]), 400, "the tag '../x' is not an image reference", "../x"
    ),
    Case("not-a-tar", lambda s: _write(s.scratch / "junk", b"<html>not a tarball</html>" * 50), 400, "not a tar"),
    # Trees no removal may trip over.
    Case(
        "deeper-than-the-depth-limit",
        layers([("d/" * MAX_DEPTH + "f", "file", "x")]),
        400,
        f"is {MAX_DEPTH + 1} levels deep: at most {MAX_DEPTH} are unpacked",
    ),
    Case("deep-tree-and-a-wrong-diff-id", deep_tree_with_wrong_diff_id, 400, "levels deep"),
    # Members read whole, and what they hold, are bounded.
    Case("manifest-over-the-document-limit", padded_member("manifest.json", 2 << 20), 413, "manifest.json' is 2097152"),
    Case("config-over-the-document-limit", padded_member("config", 2 << 20), 413, r"\.json' is 2097152 bytes"),
    Case("oci-index-over-the-document-limit", padded_oci_index, 413, "index.json' is 2097\\d{3} bytes"),
    Case("env-value-over-max-arg-strlen", configured(Env=["X=" + "x" * 200_000]), 413, "MAX_ARG_STRLEN"),
    Case("cmd-over-the-exec-limit", configured(Cmd=["x"] * 120_000), 413, "command line and environment"),
    Case("passwd-over-its-limit", accounts(bytes(5 << 20)), 413, "/etc/passwd is larger than"),
    Case("passwd-line-over-its-limit", accounts(b"x" * (100 << 10) + b"\n"), 413, "/etc/passwd has a line longer"),
    # Configs that could never run.
    Case("uid-out-of-range", configured(User="65536"), 400, "uid 65536 .*outside"),
    Case("gid-out-of-range", configured(User="0:4294967296"), 400, "gid 4294967296, outside"),
    Case("unknown-user", configured(User="nobody"), 400, "'nobody', which is not in its /etc/passwd"),
    Case("unknown-group", configured(User="app:staff"), 400, "'staff', which is not in its /etc/group"),
    Case("non-ascii-digits-as-uid", configured(User="\u00b2"), 400, "not in its /etc/passwd"),
    Case("passwd-entry-without-a-numeric-gid", accounts(b"app:x:1000:abc::/:/bin/sh\n"), 400, "not in its /etc/passwd"),
    Case("nul-in-env", configured(Env=["A=b\u0000c"]), 400, "Env holds a NUL byte"),
    Case("nul-in-cmd", configured(Cmd=["/bin/hello\u0000"]), 400, "Cmd holds a NUL byte"),
    Case("env-without-a-name", configured(Env=["=x"]), 400, "Env entry '=x' is not NAME=VALUE"),
    Case("env-without-a-value", configured(Env=["JUSTKEY"]), 400, "Env entry 'JUSTKEY' is not NAME=VALUE"),
    Case("relative-working-dir", configured(WorkingDir="app"), 400, "WorkingDir 'app' is not an absolute path"),
    Case("climbing-working-dir", configured(WorkingDir="/../../etc"), 400, "WorkingDir '/../../etc' climbs"),
    Case("missing-working-dir", configured(WorkingDir="/nowhere"), 400, "WorkingDir '/nowhere' is no directory"),
    Case("working-dir-is-a-file", configured(WorkingDir="/bin/hello"), 400, "is no directory in the image"),
    Case(
        "working-dir-through-a-symlink-out",
        lambda s: docker_image(
            s,
            [("bin/hello", "file", "x"), ("app", "symlink", str(s.sentinel))],
            config={"config": {"Cmd": ["/bin/hello"], "WorkingDir": "/app"}},
        ),
        400,
        "WorkingDir '/app' is no directory in the image",
    ),
    Case("working-dir-in-proc", configured(WorkingDir="/proc/self/fd/3"), 400, "is no directory in the image"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def snapshot(directory: Path) -> dict[str, str]:
    """Every path below ``directory``, without following links: its type, or its contents."""
    found = {}
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            else:
                found[str(path)] = "dir" if path.is_dir() else path.read_text(errors="replace")
    return found


def post(daemon: Daemon, name: str, archive: Path, tag: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST the archive to the control API on the unix socket; the status and the JSON answer."""
    conn = http.client.HTTPConnection("localhost", timeout=120)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.connect(str(daemon.socket))
    try:
        query = f"?tag={tag}" if tag else ""
        conn.request("POST", f"/v1/functions/{name}{query}", body=archive.read_bytes())
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@dataclass
class Host:
    daemon: Daemon
    keeper_ip: str
    setting: Setting
    before: dict[str, str]  # the sentinel and the daemon's state dir, once the keeper is deployed

    def current(self) -> dict[str, str]:
        state = self.daemon.state_dir
        return snapshot(self.setting.sentinel) | snapshot(state / "images") | snapshot(state / "layers")


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, daemon_roots: Path, busybox_image: Callable[..., Path]
) -> Iterator[Host]:
    daemon = start_daemon(
        daemon_roots,
        daemon_range(9),
        "--max-image-size",
        f"{MAX_IMAGE_SIZE}",
        "--max-image-entries",
        f"{MAX_IMAGE_ENTRIES}",
    )
    try:
        keeper_ip = daemon.deploy("keeper", busybox_image(KEEPER_BODY))
        sentinel = tmp_path_factory.mktemp("sentinel")
        (sentinel / "secret").write_text("untouched")
        setting = Setting(sentinel, tmp_path_factory.mktemp("crafted"))
        host = Host(daemon, keeper_ip, setting, {})
        host.before = host.current()
        yield host
    finally:
        daemon.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_archive_is_refused_and_changes_nothing(host: Host, case: Case) -> None:
    archive = case.build(host.setting)
    status, answer = post(host.daemon, "victim", archive, case.tag)
    assert status == case.status, answer
    assert re.search(case.message, answer["error"]), answer["error"]

    assert host.current() == host.before, "the sentinel, or the images dir, changed"
    assert list((host.daemon.state_dir / "uploads").iterdir()) == []
    assert [f["name"] for f in json.loads(host.daemon.faas("list", "--json").stdout)] == ["keeper"]
    assert http_get(host.keeper_ip) == (200, f"{KEEPER_BODY}\n".encode())


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_write_through_a_lower_layers_symlink_stays_in_its_own_layer(host: Host, target: str) -> None:
    """CVE-2025-45582's shape: layer 1 points ``up`` out of the rootfs, layer 2 writes ``up/pwned``.
    Each layer is unpacked alone, so layer 2's ``up`` is a real directory that hides the symlink."""
    link = str(host.setting.sentinel) if target == "absolute" else host.setting.climb("")
    archive = docker_image(host.setting, [("up", "symlink", link)], [("up/pwned", "file", "pwned")])
    host.daemon.deploy("through", archive)
    try:
        rootfs = host.daemon.state_dir / "images" / "through" / "1" / "rootfs"
        assert (rootfs / "up").is_dir() and not (rootfs / "up").is_symlink()
        assert (rootfs / "up" / "pwned").read_text() == "pwned"
        assert os.listdir(host.setting.sentinel) == ["secret"]
    finally:
        assert host.daemon.faas("rm", "through").returncode == 0
    assert host.current() == host.before


def test_the_cli_shows_the_reason(host: Host) -> None:
    archive = docker_image(host.setting, [("up", "symlink", str(host.setting.sentinel)), ("up/pwned", "file", "x")])
    result = host.daemon.faas("new", "victim", "-f", str(archive))
    assert result.returncode == 1
    assert "writes through the symlink 'up'" in result.stderr
    assert host.current() == host.before


def test_device_nodes_and_fifos_are_skipped_not_refused(host: Host, busybox_image: Callable[..., Path]) -> None:
    with tarfile.open(busybox_image(KEEPER_BODY)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        base = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    devices = layer_bytes([("dev/sda", "chr", ""), ("dev/null", "chr", ""), ("run/pipe", "fifo", "")])
    ip = host.daemon.deploy("devices", docker_image(host.setting, base, devices))
    try:
        assert http_get(ip) == (200, b"hello from C\n")  # CONFIG runs the handler without a body
        rootfs = host.daemon.state_dir / "images" / "devices" / "1" / "rootfs"
        assert not (rootfs / "dev" / "sda").exists() and not (rootfs / "dev" / "null").exists()
        assert not (rootfs / "run").exists(), "a skipped entry makes no parent either"
    finally:
        assert host.daemon.faas("rm", "devices").returncode == 0
    assert host.current() == host.before


def test_the_rootfs_is_owned_by_the_shifted_ids(host: Host) -> None:
    rootfs = host.daemon.state_dir / "images" / "keeper" / "1" / "rootfs"
    base = Config.userns_base
    for path in (rootfs, rootfs / "bin", rootfs / "bin" / "hello", rootfs / "tmp", rootfs / "control.sock"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (base, base), path
    for above in (rootfs.parent, rootfs.parent.parent):
        assert above.stat().st_mode & 0o777 == 0o711, above
