"""The bounded buffer on its way to real files, and removing what belongs to no function."""

from __future__ import annotations

from pathlib import Path

from faasd.config import LogLimits
from faasd.logs import Logs


async def test_the_buffer_holds_exactly_the_records_not_yet_on_disk_and_refuses_what_does_not_fit(
    tmp_path: Path,
) -> None:
    logs = Logs(tmp_path, LogLimits(max_buffered_bytes=200))
    function_log = logs.get("fn")
    assert function_log.write_lines("r", "stdout", [b"x" * 100])
    queued = function_log.buffered_bytes
    assert not function_log.write_lines("r", "stdout", [b"y" * 100])  # two such records pass 200 bytes
    assert function_log.buffered_bytes == queued
    assert function_log.write_lines("r", "faasd", [b"outcome=served"], force=True)  # the daemon's record always
    forced = function_log.buffered_bytes - queued
    await logs.close()
    assert function_log.buffered_bytes == 0
    assert not function_log.write_lines("r", "faasd", [b"late"], force=True)
    current = tmp_path / "fn" / "current"
    assert current.stat().st_size == queued + forced
    assert [line.split(b" ", 1)[1] for line in current.read_bytes().splitlines()] == [
        b"r stdout " + b"x" * 100,
        b"r faasd outcome=served",
    ]


async def test_sweep_removes_what_belongs_to_no_function(tmp_path: Path) -> None:
    logs = Logs(tmp_path, LogLimits())
    (tmp_path / "kept").mkdir()
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "current").write_text("x\n")
    (tmp_path / "old.log").write_text("x\n")
    removed = await logs.sweep({"kept"})
    assert sorted(p.name for p in removed) == ["gone", "old.log"]
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    await logs.close()
