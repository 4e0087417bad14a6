"""Deploy-time builds without a container: what a build's tar may hold, how it joins the code
layer, the limits a build runs under, and the refusal when no package directory is set."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import pytest

from faasd.config import Config
from faasd.errors import InvalidCode, InvalidRequest
from faasd.images.archive import ImageArchive
from faasd.limits import MIB, Limits
from faasd.source.archive import diff_id, write_archive
from faasd.source.build import Builder, build_limits, checked_member, code_layer, installer_said
from faasd.source.functions import lay_out_built
from faasd.source.runtimes import LANGUAGES, BuildStep
from faasd.source.sandbox import RootfsImage


def tar_of(*members: tuple[str, bytes, str | None]) -> io.BytesIO:
    """A tar of (name, data, link target): a file, a directory (name ending in /) or a symlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif name.endswith("/"):
                info.type = tarfile.DIRTYPE
            info.size = len(data) if info.isreg() else 0
            info.uid, info.mode, info.mtime = 1000, 0o4666 if info.isreg() else 0o777, 123
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return buffer


def member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("../deps/x", tarfile.REGTYPE),  # climbs out
        ("deps/../../etc/passwd", tarfile.REGTYPE),
        ("/faas/deps/x", tarfile.REGTYPE),  # absolute
        ("faas/code/x.js", tarfile.REGTYPE),  # outside the roots a build may write
        ("code", tarfile.REGTYPE),  # a root that is no directory
        ("runtime/runtime.py", tarfile.REGTYPE),
        ("deps//x", tarfile.REGTYPE),
        ("deps/./x", tarfile.REGTYPE),
        ("deps/dev", tarfile.CHRTYPE),  # a device
        ("deps/fifo", tarfile.FIFOTYPE),
        ("deps/hard", tarfile.LNKTYPE),  # a hard link: of what, on the host?
        ("deps", tarfile.SYMTYPE),  # the root itself a link
        ("code/.wh.index.js", tarfile.REGTYPE),  # a whiteout: it would delete a file of the code
    ],
)
def test_a_hostile_member_of_a_build_is_refused(name: str, kind: bytes) -> None:
    with pytest.raises(InvalidCode):
        checked_member(member(name, kind))


def test_members_become_roots_with_fixed_modes_and_times() -> None:
    info = checked_member(member("./deps/pkg/tool"))
    assert (info.name, info.uid, info.mtime) == ("faas/deps/pkg/tool", 0, 1_700_000_000)
    executable = member("deps/bin/run")
    executable.mode = 0o4711  # setuid is dropped, the exec bit kept
    assert checked_member(executable).mode == 0o755
    assert checked_member(member("deps/pkg/", tarfile.DIRTYPE)).mode == 0o755
    link = member("deps/bin/alias", tarfile.SYMTYPE)
    link.linkname = "/etc/shadow"  # resolved inside the function's own rootfs, like any layer's links
    assert checked_member(link).linkname == "/etc/shadow"


def test_the_code_layer_holds_the_code_then_the_build_and_is_the_same_for_the_same_input() -> None:
    files = {"handler.py": b"import pkg\n", "requirements.txt": b"pkg\n"}
    built = tar_of(("deps/", b"", None), ("deps/pkg/", b"", None), ("deps/pkg/__init__.py", b"X = 1\n", None))
    first, second = io.BytesIO(), io.BytesIO()
    code_layer(first, files, built)
    code_layer(second, files, built)
    assert first.getvalue() == second.getvalue() and diff_id(first) == diff_id(second)
    first.seek(0)
    with tarfile.open(fileobj=first) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("faas/deps/pkg/__init__.py").read() == b"X = 1\n"  # type: ignore[union-attr]
    assert list(members) == [
        "faas/code",
        "faas/code/handler.py",
        "faas/code/requirements.txt",
        "faas/deps",
        "faas/deps/pkg",
        "faas/deps/pkg/__init__.py",
    ]
    assert {(m.uid, m.mode, m.mtime) for m in members.values() if m.isreg()} == {(0, 0o644, 1_700_000_000)}


def test_a_build_may_add_to_the_codes_directories_but_not_replace_its_files() -> None:
    files = {"index.ts": b"", "lib/util.ts": b""}
    built = tar_of(("code/", b"", None), ("code/lib/", b"", None), ("code/lib/util.js", b"js", None))
    layer = io.BytesIO()
    code_layer(layer, files, built)
    layer.seek(0)
    with tarfile.open(fileobj=layer) as tar:
        names = tar.getnames()
    assert names == [
        "faas/code",
        "faas/code/lib",
        "faas/code/index.ts",
        "faas/code/lib/util.ts",
        "faas/code/lib/util.js",
    ]
    with pytest.raises(InvalidCode, match="code/index.ts, which the code has too"):
        code_layer(io.BytesIO(), files, tar_of(("code/index.ts", b"changed", None)))


def test_what_a_build_made_is_laid_out_beside_the_code_to_bind(tmp_path: Path) -> None:
    built = tar_of(("code/", b"", None), ("code/node_modules/", b"", None), ("code/node_modules/m.js", b"m", None))
    code, deps = lay_out_built(tmp_path / "w", {"index.js": b"i"}, built, 0)
    assert sorted(str(p.relative_to(code)) for p in code.rglob("*")) == [
        "index.js",
        "node_modules",
        "node_modules/m.js",
    ]
    assert deps is None
    _, deps = lay_out_built(tmp_path / "p", {"h.py": b""}, tar_of(("deps/", b"", None), ("deps/a.py", b"", None)), 0)
    assert deps is not None and (deps / "a.py").is_file()


@pytest.mark.parametrize("root", ["code", "deps"])
def test_a_build_that_makes_a_root_a_link_is_refused_before_anything_binds_it(tmp_path: Path, root: str) -> None:
    with pytest.raises(InvalidCode, match="something else than a directory"):
        lay_out_built(tmp_path / "w", {"h.py": b""}, tar_of((root, b"", "/etc")), 0)


def test_a_build_is_asked_for_by_a_manifest_or_a_file_to_compile() -> None:
    step = BuildStep("build.js", "npm install and tsc", ("package.json",), ((".ts", ".js"),))
    assert step.asks(["index.ts"]) and not step.installs(["index.ts"]) and not step.asks(["types.d.ts"])
    assert (step.runs("index.ts"), step.runs("lib/a.ts"), step.runs("index.js")) == ("index.js", "lib/a.js", "index.js")
    assert step.asks(["index.js", "package.json"]) and step.installs(["package.json"])
    assert not step.asks(["index.js", "lib/package.json.bak"])
    python = LANGUAGES["python"].build
    assert python is not None and python.asks(["requirements.txt"]) and not python.asks(["handler.py", "x.ts"])


def test_a_build_that_writes_a_name_twice_is_refused() -> None:
    built = tar_of(("deps/a.py", b"1", None), ("deps/a.py", b"2", None))
    with pytest.raises(InvalidCode, match="deps/a.py"):
        code_layer(io.BytesIO(), {"handler.py": b""}, built)


def test_a_code_layer_in_a_file_goes_into_the_archive_whole(tmp_path: Path) -> None:
    layer = io.BytesIO()
    code_layer(layer, {"handler.py": b"x"}, tar_of(("deps/", b"", None), ("deps/m.py", b"y" * 5000, None)))
    out = tmp_path / "image.tar"
    write_archive(out, [], [layer], {"Cmd": ["python3"]}, "fn:source")
    with ImageArchive(out, None, 1 << 30) as archive:
        assert archive.layer_count == 1 and archive.diff_id(1) == diff_id(layer)


def test_the_installers_last_lines_answer_from_a_whole_line() -> None:
    said = installer_said(b"line\n" * 10 + b"x" * 1990 + b"\nERROR: the reason\n")
    assert said.endswith("ERROR: the reason") and len(said) <= 2000 and not said.startswith("x" * 1990)
    assert installer_said(b"  \n") == "no output"


def test_a_build_has_room_for_what_it_installs_and_the_build_timeout() -> None:
    config = Config(max_deps_bytes=100 * MIB, build_timeout_seconds=60)
    limits = build_limits(Limits(memory_bytes=128 * MIB, tmp_bytes=16 * MIB, timeout_seconds=5), config)
    assert (limits.memory_bytes, limits.tmp_bytes, limits.timeout_seconds) == (228 * MIB, 100 * MIB, 60)


def test_without_a_package_directory_a_build_is_refused_before_any_container(tmp_path: Path) -> None:
    builder = Builder(Config(packages_dir=None), oneshot=None)  # type: ignore[arg-type]
    image = RootfsImage(tmp_path, None, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="faasd --packages DIR"):
        asyncio.run(builder.run(image, LANGUAGES["python"], ["requirements.txt"], tmp_path, Limits(), io.BytesIO()))


def test_a_runtime_added_without_the_build_mount_point_is_refused_with_what_to_do(tmp_path: Path) -> None:
    builder = Builder(Config(packages_dir=tmp_path), oneshot=None)  # type: ignore[arg-type]
    image = RootfsImage(tmp_path / "rootfs", None, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="add it again"):
        asyncio.run(builder.run(image, LANGUAGES["python"], ["requirements.txt"], tmp_path, Limits(), io.BytesIO()))
