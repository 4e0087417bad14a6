"""A cgroup of one forked child: the memory, CPU and pids limits a container would have had.

A template's child is forked inside the template's container, so runc's cgroup would hold the
template and all its children together. The daemon instead makes one cgroup per connection
beside runc's (``/faasd/<function>-<request id>``, as runc's are named), writes the version's limits into
it and moves the child there, by the host pid it learnt through SCM_CREDENTIALS, before the
child runs a line of the function's code (the child waits for the daemon's word).

Under cgroup v1 (one hierarchy per controller) that is a directory in each of ``memory``,
``cpu`` and ``pids``; under v2, one directory in the unified tree. Neither moves charges: memory
the child shares copy-on-write with its template stays the template's until the child writes
it; what the child allocates or copies, its processes and its CPU time are the connection's.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from faasd.limits import Limits
from faasd.sandbox.spec import CPU_PERIOD_US

ROOT = Path("/sys/fs/cgroup")
PARENT = "faasd"  # where runc puts faasd's containers (spec.py: cgroupsPath /faasd/<id>)


def is_unified(root: Path = ROOT) -> bool:
    """Whether the host mounts cgroup v2 alone (its root lists its controllers)."""
    return (root / "cgroup.controllers").exists()


def limit_files(limits: Limits, unified: bool) -> dict[str, dict[str, str]]:
    """What to write into a connection's cgroup, by hierarchy ("" for v2's one), in order."""
    quota = int(limits.cpus * CPU_PERIOD_US)
    if unified:
        return {
            "": {
                "memory.max": str(limits.memory_bytes),
                "memory.swap.max": "0",
                "pids.max": str(limits.pids),
                "cpu.max": f"{quota} {CPU_PERIOD_US}",
            }
        }
    return {
        # memsw (memory plus swap) exists with swap accounting; it may not go below the limit.
        "memory": {
            "memory.limit_in_bytes": str(limits.memory_bytes),
            "memory.memsw.limit_in_bytes": str(limits.memory_bytes),
        },
        "cpu": {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": str(quota)},
        "pids": {"pids.max": str(limits.pids)},
    }


@dataclass
class ConnectionCgroup:
    """One connection's cgroup directories, made with its limits; ``place`` a pid, ``remove`` after."""

    directories: list[Path]

    @classmethod
    def create(cls, name: str, limits: Limits, root: Path = ROOT) -> ConnectionCgroup:
        unified = is_unified(root)
        made = cls([])
        try:
            for hierarchy, files in limit_files(limits, unified).items():
                directory = root / hierarchy / PARENT / name
                directory.mkdir(parents=True)
                made.directories.append(directory)
                for file, value in files.items():
                    if (directory / file).exists():  # memsw and swap.max only with swap accounting
                        (directory / file).write_text(value)
        except BaseException:
            made.remove()
            raise
        return made

    def place(self, pid: int) -> None:
        """Move process ``pid`` (a host pid) into every hierarchy of this cgroup."""
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(str(pid))

    def remove(self) -> bool:
        """Remove the directories that are empty; False while one still holds a process."""
        left = []
        for directory in self.directories:
            with contextlib.suppress(FileNotFoundError):
                try:
                    os.rmdir(directory)
                except OSError:  # EBUSY: a process of the connection has not gone yet
                    left.append(directory)
        self.directories = left
        return not left
