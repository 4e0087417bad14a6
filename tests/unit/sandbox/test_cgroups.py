"""What a fork-mode connection's cgroup holds, under cgroup v1 and v2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from faasd.limits import MIB, Limits
from faasd.sandbox.cgroups import (
    ConnectionCgroup,
    daemon_parent,
    hierarchies,
    is_unified,
    limit_files,
    prepare_parent,
    remove_parent,
    sweep,
)

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


def test_the_hierarchies_are_those_written() -> None:
    for unified in (False, True):
        assert tuple(limit_files(LIMITS, unified)) == hierarchies(unified)


def test_each_state_dir_has_a_parent_of_its_own() -> None:
    first, second = daemon_parent(Path("/var/lib/faasd")), daemon_parent(Path("/srv/faasd-b"))
    assert first != second and first == daemon_parent(Path("/var/lib/faasd"))
    assert first.startswith("faasd/daemon.") and len(first) == len("faasd/daemon.") + 16


def v1_root(tmp_path: Path) -> Path:
    for hierarchy in hierarchies(unified=False):
        (tmp_path / hierarchy).mkdir()
    return tmp_path


def test_directories_are_made_under_the_parent_and_removed_once_empty(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    prepare_parent("faasd/daemon.x", 0, root=root)
    cgroup = ConnectionCgroup.create("faasd/daemon.x", "fn-abc", LIMITS, root=root)
    assert cgroup.directories == [root / h / "faasd" / "daemon.x" / "fn-abc" for h in ("memory", "cpu", "pids")]
    (cgroup.directories[0] / "leftover").write_text("")  # a directory the kernel would call busy
    assert not cgroup.remove() and cgroup.directories == [root / "memory" / "faasd" / "daemon.x" / "fn-abc"]
    (root / "memory" / "faasd" / "daemon.x" / "fn-abc" / "leftover").unlink()
    assert cgroup.remove() and not (root / "memory" / "faasd" / "daemon.x" / "fn-abc").exists()


def test_a_parent_that_was_not_prepared_gets_no_cgroup(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    with pytest.raises(FileNotFoundError):  # under v2 it would lack the controllers its parent passes down
        ConnectionCgroup.create("faasd/daemon.x", "fn-abc", LIMITS, root=root)
    assert not any(root.rglob("fn-abc"))


def test_a_start_sweeps_what_its_parent_holds_and_nothing_beside_it(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    for hierarchy in hierarchies(unified=False):
        for cgroup in ("faasd/daemon.x/fn-1", "faasd/daemon.x/fn-2", "faasd/daemon.y/fn-3", "faasd/fn-4"):
            (root / hierarchy / cgroup).mkdir(parents=True)
    prepare_parent("faasd/daemon.x", 0, root=root)
    for hierarchy in hierarchies(unified=False):
        assert sorted(p.name for p in (root / hierarchy / "faasd").iterdir()) == ["daemon.x", "daemon.y", "fn-4"]
        assert list((root / hierarchy / "faasd" / "daemon.x").iterdir()) == []
        assert (root / hierarchy / "faasd" / "daemon.y" / "fn-3").is_dir(), "another daemon's is left alone"
    remove_parent("faasd/daemon.x", 0, root=root)
    assert not any((root / h / "faasd" / "daemon.x").exists() for h in hierarchies(unified=False))


def test_a_cgroup_that_cannot_go_is_reported_and_a_pid_outside_it_is_spared(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    busy = root / "pids" / "faasd" / "daemon.x" / "fn-1"
    busy.mkdir(parents=True)
    with subprocess.Popen(["sleep", "30"]) as bystander:
        # It is listed, but the kernel puts it elsewhere: its pid may have been reused.
        (busy / "cgroup.procs").write_text(f"{bystander.pid}\n")
        assert sweep("faasd/daemon.x", 0.1, root=root) == [busy]
        assert bystander.poll() is None, "a process whose /proc/PID/cgroup is not this cgroup is not killed"
        bystander.kill()


def test_v2_passes_the_controllers_down_to_the_parent(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    prepare_parent("faasd/daemon.x", 0, root=tmp_path)
    for level in (tmp_path, tmp_path / "faasd", tmp_path / "faasd" / "daemon.x"):
        assert (level / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    cgroup = ConnectionCgroup.create("faasd/daemon.x", "fn-abc", LIMITS, root=tmp_path)
    assert cgroup.directories == [tmp_path / "faasd" / "daemon.x" / "fn-abc"]
