"""Appending and rotating on real files: the cap holds and the newest whole records stay."""

from __future__ import annotations

from pathlib import Path

from faasd.config import LogLimits
from faasd.logs.files import LogFiles
from tests.unit.logs.logfiles import all_lines, records, texts


def test_rotation_keeps_the_cap_and_the_newest_lines(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=3))
    for i in range(200):
        files.append(records(1, start=i))
    files.close()
    assert sorted(p.name for p in (tmp_path / "fn").iterdir()) == ["current", "current.1", "current.2"]
    for path in (tmp_path / "fn").iterdir():
        assert 0 < path.stat().st_size <= 1000
        assert path.read_bytes().endswith(b"\n")
    kept = texts(all_lines(files))
    assert kept == [f"line {i}" for i in range(200 - len(kept), 200)]
    assert len(kept) > 2 * 1000 // len(records(1, 199))


def test_a_batch_larger_than_a_file_is_split_at_record_boundaries(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=2))
    files.append(records(50))
    assert all(path.stat().st_size <= 1000 for path in (tmp_path / "fn").iterdir())
    kept = texts(all_lines(files))
    assert kept == [f"line {i}" for i in range(50 - len(kept), 50)]


def test_one_file_only_starts_over_when_full(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "fn", LogLimits(max_file_bytes=1000, max_files=1))
    for i in range(100):
        files.append(records(1, start=i))
    assert [p.name for p in (tmp_path / "fn").iterdir()] == ["current"]
    assert texts(all_lines(files))[-1] == "line 99"
