"""``faas build DIR -o FILE``: a Python handler's image without Docker, from any directory.

mmdebstrap is not run here (half a minute and the network): a stand-in writes the base layer.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from faas_cli import imagebuild
from faas_cli.main import main


@pytest.fixture(autouse=True)
def stand_in_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        imagebuild, "MMDEBSTRAP", [sys.executable, "-c", "import sys, tarfile; tarfile.open(sys.argv[-1], 'w').close()"]
    )


def app_layer_names(image: Path) -> set[str]:
    with tarfile.open(image) as archive:
        layers = [m for m in archive.getmembers() if m.name.endswith("layer.tar")]
        extracted = archive.extractfile(max(layers, key=lambda m: m.size))
        assert extracted is not None
        with tarfile.open(fileobj=io.BytesIO(extracted.read())) as layer:
            return set(layer.getnames())


def test_a_rebuild_in_place_leaves_out_its_output_and_archives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, cache, elsewhere = tmp_path / "myapp", tmp_path / "cache", tmp_path / "elsewhere"
    app.mkdir()
    elsewhere.mkdir()
    (app / "app.py").write_text("print('hi')\n")
    (app / "old-build.tar.gz").write_bytes(b"\x1f\x8b" + b"x" * 4096)
    monkeypatch.chdir(elsewhere)  # not the repository: the SDK is found all the same
    argv = ["build", str(app), "-o", str(app / "image.tar"), "--cache", str(cache)]

    first = CliRunner().invoke(main, argv)
    assert first.exit_code == 0, first.output
    assert first.stdout == f"Built {app / 'image.tar'} ({(app / 'image.tar').stat().st_size / 1e6:.1f} MB): " + (
        f"deploy it with faas new NAME -f {app / 'image.tar'}\n"
    )
    assert "base: building " in first.stderr and f"left out: {app / 'old-build.tar.gz'}" in first.stderr
    before = (app / "image.tar").read_bytes()

    second = CliRunner().invoke(main, argv)
    assert second.exit_code == 0, second.output
    assert f"base: {next(cache.glob('debian-python-base-*.tar'))} (cached)" in second.stderr
    assert f"left out: {app / 'image.tar'} (the output)" in second.stderr
    assert (app / "image.tar").read_bytes() == before, "the previous output is no part of the next one"
    assert {"app/app.py", "app/faas_handler.py"} <= app_layer_names(app / "image.tar")
    assert not any(name.endswith((".tar", ".tar.gz")) for name in app_layer_names(app / "image.tar"))


def test_a_directory_without_app_py_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(tmp_path), "-o", str(tmp_path / "x.tar")])
    assert result.exit_code == 1 and f"faas: {tmp_path} has no app.py" in result.output
    assert not (tmp_path / "x.tar").exists()
