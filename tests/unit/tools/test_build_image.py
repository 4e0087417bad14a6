"""The offline image builder writes archives shaped as ``docker save`` and podman write them.

Every digest an archive states is checked against the bytes it holds. mmdebstrap itself is not
run here (it takes half a minute and the network): a stand-in writes the base layer.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import json
import marshal
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from faas_cli import imagebuild
from faas_cli.main import main as faas
from tools import build_image
from tools.build_image import BuildError, build_busybox_image, build_python_image, write_docker_archive

needs_busybox = pytest.mark.skipif(
    not build_image.BUSYBOX.is_file() or shutil.which("gcc") is None, reason="needs busybox-static and gcc"
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None, name
    return member.read()


def layer_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def docker_save(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[bytes], dict[str, bytes]]:
    """Read a docker-save archive, checking what it states: config digest, diff_ids, layer dirs.

    Returns its manifest entry, image config, layer tars and every file by name.
    """
    with tarfile.open(path) as tar:
        files = {member.name: read(tar, member.name) for member in tar.getmembers() if member.isfile()}
    (manifest,) = json.loads(files["manifest.json"])
    config_bytes = files[manifest["Config"]]
    assert manifest["Config"] == f"{sha256(config_bytes)}.json"
    config = json.loads(config_bytes)
    layers = [files[name] for name in manifest["Layers"]]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{sha256(layer)}" for layer in layers]}
    for name in manifest["Layers"]:
        directory = name.removesuffix("/layer.tar")
        assert files[f"{directory}/VERSION"] == b"1.0"
        assert json.loads(files[f"{directory}/json"])["id"] == directory
    return manifest, config, layers, files


@needs_busybox
def test_busybox_image_is_a_docker_save_archive(tmp_path: Path) -> None:
    build_busybox_image(tmp_path / "image.tar", body="hi")
    manifest, config, (layer,), files = docker_save(tmp_path / "image.tar")
    top = manifest["Layers"][-1].removesuffix("/layer.tar")
    assert manifest["RepoTags"] == ["busybox-hello:latest"]
    assert json.loads(files["repositories"]) == {"busybox-hello": {"latest": top}}
    assert (config["os"], config["config"]["Cmd"]) == ("linux", ["/bin/hello", "hi"])
    with tarfile.open(fileobj=io.BytesIO(layer)) as rootfs:
        members = {member.name: member for member in rootfs.getmembers()}
        assert members["bin/busybox"].isfile() and members["bin/hello"].mode & 0o111
        assert members["bin/sh"].issym() and members["usr/bin/env"].linkname == "/bin/busybox"
        assert members["tmp"].mode == 0o1777
        assert b"nobody:x:65534" in read(rootfs, "etc/passwd")
        assert {member.uid for member in members.values()} == {0}


@needs_busybox
def test_same_input_gives_the_same_image(tmp_path: Path) -> None:
    build_busybox_image(tmp_path / "one.tar")
    build_busybox_image(tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    _, config, _, _ = docker_save(tmp_path / "one.tar")
    assert config["config"]["Cmd"] == ["/bin/hello"]


@needs_busybox
def test_oci_variant_has_an_index_and_verified_blobs(tmp_path: Path) -> None:
    build_busybox_image(tmp_path / "image.tar", body="oci", oci=True)
    with tarfile.open(tmp_path / "image.tar") as tar:
        assert json.loads(read(tar, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        blobs = {
            member.name.removeprefix("blobs/sha256/"): read(tar, member.name)
            for member in tar.getmembers()
            if member.isfile() and member.name.startswith("blobs/sha256/")
        }
        index = json.loads(read(tar, "index.json"))
    for digest, data in blobs.items():
        assert sha256(data) == digest
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "busybox-hello:latest"}
    manifest_bytes = blobs[entry["digest"].removeprefix("sha256:")]
    assert (entry["mediaType"], entry["size"]) == ("application/vnd.oci.image.manifest.v1+json", len(manifest_bytes))
    manifest = json.loads(manifest_bytes)
    config = json.loads(blobs[manifest["config"]["digest"].removeprefix("sha256:")])
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    compressed = blobs[layer["digest"].removeprefix("sha256:")]
    assert layer["size"] == len(compressed)
    assert config["rootfs"]["diff_ids"] == [f"sha256:{sha256(gzip.decompress(compressed))}"]
    assert config["config"]["Cmd"] == ["/bin/hello", "oci"]


def test_layers_stack_in_order_and_the_callers_config_is_kept(tmp_path: Path) -> None:
    layers = [layer_tar(tmp_path / f"{n}.tar", {f"file{n}": b"%d" % n}) for n in range(3)]
    config = {"config": {"Entrypoint": ["/bin/sh"], "User": "1000:1000"}, "author": "tests"}
    write_docker_archive(tmp_path / "image.tar", layers, config, "demo:1")
    manifest, document, contents, files = docker_save(tmp_path / "image.tar")
    parents = [json.loads(files[name.replace("layer.tar", "json")]).get("parent") for name in manifest["Layers"]]
    repositories = json.loads(files["repositories"])
    directories = [name.removesuffix("/layer.tar") for name in manifest["Layers"]]
    assert contents == [path.read_bytes() for path in layers]
    assert parents == [None, directories[0], directories[1]]
    assert repositories == {"demo": {"1": directories[2]}}
    assert (document["config"], document["author"], len(document["history"])) == (config["config"], "tests", 3)


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_docker_archive(tmp_path / "image.tar", [tmp_path / "missing.tar"], {"config": {}}, "x:1")
    assert list(tmp_path.iterdir()) == []


def test_python_image_puts_the_sdk_and_app_on_the_cached_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    # Stands in for mmdebstrap: writes an empty rootfs to the path it is given last.
    monkeypatch.setattr(
        imagebuild,
        "MMDEBSTRAP",
        [sys.executable, "-c", "import sys, tarfile; tarfile.open(sys.argv[-1], 'w').close()"],
    )
    base = imagebuild.debian_python_base(cache)
    build_python_image(tmp_path / "image.tar", cache)
    manifest, config, (base_layer, app_layer), _ = docker_save(tmp_path / "image.tar")
    assert base_layer == base.read_bytes() and manifest["RepoTags"] == ["python-hello:latest"]
    assert config["config"]["Cmd"] == ["python3", "/app/app.py"] and config["config"]["WorkingDir"] == "/app"
    with tarfile.open(fileobj=io.BytesIO(app_layer)) as app:
        assert read(app, "app/faas_handler.py") == (build_image.HANDLERS / "faas_handler.py").read_bytes()
        assert read(app, "app/app.py") == (build_image.HANDLERS / "hello" / "app.py").read_bytes()

    # Another recipe is another file name: it builds anew, and a failure leaves nothing behind.
    monkeypatch.setattr(imagebuild, "MMDEBSTRAP", [sys.executable, "-c", "raise SystemExit('no mirror')"])
    with pytest.raises(BuildError, match="no mirror"):
        imagebuild.debian_python_base(cache)
    assert [path.name for path in cache.iterdir()] == [base.name]


def test_cli_builds_and_reports_missing_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build_image, "BUSYBOX", tmp_path / "no-busybox")
    assert build_image.main(["busybox", str(tmp_path / "image.tar")]) == 1
    assert "apt-get install busybox-static" in capsys.readouterr().err
    with pytest.raises(BuildError, match="busybox-static"):
        build_busybox_image(tmp_path / "image.tar")


@pytest.fixture
def stand_in_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """mmdebstrap's stand-in: writes an empty rootfs to the path it is given last."""
    monkeypatch.setattr(
        imagebuild,
        "MMDEBSTRAP",
        [sys.executable, "-c", "import sys, tarfile; tarfile.open(sys.argv[-1], 'w').close()"],
    )


def wheel(directory: Path, name: str, module: bytes) -> Path:
    """A minimal pure-Python wheel (PEP 427) with one module and a console script."""
    dist_info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": module,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": f"[console_scripts]\n{name} = {name}:main\n".encode(),
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_wheel, data in {**files, f"{dist_info}/RECORD": record.encode()}.items():
            archive.writestr(name_in_wheel, data)
    return path


def test_python_image_carries_the_app_dir_and_packages_compiled_for_the_image(
    tmp_path: Path, stand_in_base: None
) -> None:
    cache, app = tmp_path / "cache", tmp_path / "myapp"
    (cache / "wheels").mkdir(parents=True)
    wheel(cache / "wheels", "tinypkg", b"VALUE = 42\n")
    wheel(cache / "wheels", "tinytwo", b"VALUE = 2\n")
    (app / "lib").mkdir(parents=True)
    (app / "__pycache__").mkdir()
    (app / "app.py").write_text("import tinypkg\n")
    (app / "lib" / "helpers.py").write_text("HELP = 1\n")
    (app / "requirements.txt").write_text("# from PyPI\ntinypkg\n")
    (app / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"stale")

    build_python_image(tmp_path / "image.tar", cache, app_dir=app, packages=["tinytwo"])
    manifest, config, (_, app_layer), _ = docker_save(tmp_path / "image.tar")
    assert manifest["RepoTags"] == ["python-myapp:latest"]
    assert config["config"]["Cmd"] == ["python3", "/app/app.py"]
    site = build_image.SITE_PACKAGES
    with tarfile.open(fileobj=io.BytesIO(app_layer)) as layer:
        members = {member.name: member for member in layer.getmembers()}
        assert read(layer, "app/lib/helpers.py") == b"HELP = 1\n" and "app/requirements.txt" in members
        assert read(layer, "app/faas_handler.py") == (build_image.HANDLERS / "faas_handler.py").read_bytes()
        assert read(layer, "app/__pycache__/app.cpython-311.pyc") != b"stale"
        assert {f"{site}/tinypkg/__init__.py", f"{site}/tinytwo/__init__.py"} <= set(members)
        assert not any(name.startswith(f"{site}/bin") for name in members), "scripts name the build host's python"
        source = read(layer, f"{site}/tinypkg/__init__.py")
        pyc = read(layer, f"{site}/tinypkg/__pycache__/__init__.cpython-311.pyc")
        assert {member.uid for member in members.values()} == {0}
        assert {member.mtime for member in members.values()} == {build_image.FIXED_MTIME}
    # PEP 552: flags 0b11 is "checked hash"; the hash matches, so the image's python uses this file.
    assert pyc[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(pyc[4:8], "little") == 0b11
    assert pyc[8:16] == importlib.util.source_hash(source)
    assert marshal.loads(pyc[16:]).co_filename == f"/{site}/tinypkg/__init__.py"

    # faas build makes the same image, byte for byte.
    argv = ["build", str(app), "-o", str(tmp_path / "again.tar"), "--package", "tinytwo", "--cache", str(cache)]
    assert CliRunner().invoke(faas, argv).exit_code == 0
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "image.tar").read_bytes()


def test_a_package_that_cannot_be_had_fails_the_build_and_leaves_nothing(
    tmp_path: Path, stand_in_base: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: only the (empty) wheel cache could have it
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    refusal = r"(?s)cannot get wheels of no-such-package-faasd from PyPI or .*/cache/wheels: .*No matching distribution"
    with pytest.raises(BuildError, match=refusal):
        build_python_image(tmp_path / "image.tar", tmp_path / "cache", packages=["no-such-package-faasd"])
    assert not (tmp_path / "image.tar").exists()
