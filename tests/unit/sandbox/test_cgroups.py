"""What a fork-mode connection's cgroup holds, under cgroup v1 and v2."""

from __future__ import annotations

from pathlib import Path

from faasd.limits import MIB, Limits
from faasd.sandbox.cgroups import ConnectionCgroup, is_unified, limit_files

LIMITS = Limits(memory_bytes=64 * MIB, cpus=0.25, pids=32)


def test_v1_writes_memory_cpu_and_pids_each_in_its_own_hierarchy() -> None:
    assert limit_files(LIMITS, unified=False) == {
        "memory": {"memory.limit_in_bytes": str(64 * MIB), "memory.memsw.limit_in_bytes": str(64 * MIB)},
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "25000"},
        "pids": {"pids.max": "32"},
    }


def test_v2_writes_them_in_one_directory_and_allows_no_swap() -> None:
    assert limit_files(LIMITS, unified=True) == {
        "": {"memory.max": str(64 * MIB), "memory.swap.max": "0", "pids.max": "32", "cpu.max": "25000 100000"}
    }


def test_the_layout_is_read_from_the_root(tmp_path: Path) -> None:
    assert not is_unified(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert is_unified(tmp_path)


def test_directories_are_made_beside_runcs_and_removed_once_empty(tmp_path: Path) -> None:
    for hierarchy in ("memory", "cpu", "pids"):
        (tmp_path / hierarchy).mkdir()
    cgroup = ConnectionCgroup.create("fn-abc", LIMITS, root=tmp_path)
    assert cgroup.directories == [tmp_path / h / "faasd" / "fn-abc" for h in ("memory", "cpu", "pids")]
    (cgroup.directories[0] / "leftover").write_text("")  # a directory the kernel would call busy
    assert not cgroup.remove() and cgroup.directories == [tmp_path / "memory" / "faasd" / "fn-abc"]
    (tmp_path / "memory" / "faasd" / "fn-abc" / "leftover").unlink()
    assert cgroup.remove() and not (tmp_path / "memory" / "faasd" / "fn-abc").exists()
