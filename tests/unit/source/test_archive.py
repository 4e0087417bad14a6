"""Archives faasd composes: deterministic code layers, read back by the image reader like any upload."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from faasd.images.archive import ImageArchive
from faasd.source.archive import diff_id, files_layer, write_archive


def test_a_files_layer_is_the_same_bytes_for_the_same_files_and_lists_parents() -> None:
    files = {"b.py": b"b", "lib/a.py": b"a"}
    layer = files_layer(files, "faas/code", ["data"])
    assert layer == files_layer(dict(reversed(list(files.items()))), "faas/code", ["data"])
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["faas/code", "faas/code/b.py", "faas/code/data", "faas/code/lib", "faas/code/lib/a.py"]
    assert all(m.uid == 0 and m.mode in (0o644, 0o755) for m in members.values())
    assert diff_id(layer) != diff_id(files_layer({"b.py": b"c", "lib/a.py": b"a"}, "faas/code"))


def test_a_composed_archive_reads_back_with_held_layers_left_out(tmp_path: Path) -> None:
    held = "sha256:" + "ab" * 32
    layer = files_layer({"f.py": b"return 1\n"}, "faas/code")
    out = tmp_path / "image.tar"
    write_archive(out, [held], [layer], {"Cmd": ["python3", "x"], "Env": ["A=1"]}, "fn:source")
    with ImageArchive(out, None, 1 << 30) as archive:
        assert archive.layer_count == 2
        assert archive.omitted(1) and archive.diff_id(1) == held
        assert not archive.omitted(2) and archive.diff_id(2) == diff_id(layer)
        assert archive.config.cmd == ("python3", "x") and archive.config.env == ("A=1",)
