"""A cgroup of one forked child: the memory, CPU and pids limits a container would have had.

A template's child is forked inside the template's container, so runc's cgroup would hold the
template and all its children together. The daemon instead makes one cgroup per connection
(``<function>-<request id>``, as runc names a container's), writes the version's limits into it
and moves the child there, by the host pid it learnt through SCM_CREDENTIALS, before the child
runs a line of the function's code (the child waits for the daemon's word).

Each daemon keeps its connections' cgroups under a parent of its own, ``/faasd/daemon.<digest of
its state dir>``: the state dir is locked by one daemon at a time, so the daemon that starts on it
may sweep what the last one left there (killed with SIGKILL, it removed nothing), and never touches
another daemon's. Runc's containers stay at ``/faasd/<id>``, where runc removes their cgroups.

Under cgroup v1 (one hierarchy per controller) a cgroup is a directory in each of ``memory``,
``cpu`` and ``pids``; under v2, one directory in the unified tree, whose parents must pass those
controllers down (``cgroup.subtree_control``). Neither moves charges: memory the child shares
copy-on-write with its template stays the template's until the child writes it; what the child
allocates or copies, its processes and its CPU time are the connection's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from faasd.limits import Limits
from faasd.sandbox.spec import CPU_PERIOD_US

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "faasd"  # where runc puts faasd's containers (spec.py: cgroupsPath /faasd/<id>)
V1_HIERARCHIES = ("memory", "cpu", "pids")
V2_CONTROLLERS = "+cpu +memory +pids"
REMOVE_SECONDS = 2.0  # the kernel ends the rest of a pid namespace after its pid 1: soon, not at once


def is_unified(root: Path = ROOT) -> bool:
    """Whether the host mounts cgroup v2 alone (its root lists its controllers)."""
    return (root / "cgroup.controllers").exists()


def hierarchies(unified: bool) -> tuple[str, ...]:
    """The hierarchies a connection's cgroup has a directory in ("" for v2's one tree)."""
    return ("",) if unified else V1_HIERARCHIES


def daemon_parent(state_dir: Path) -> str:
    """Where the daemon on ``state_dir`` makes its connections' cgroups, relative to a hierarchy.

    A name of the form ``daemon.<hex>`` is no container id (``<function>-<hex>``) runc puts beside it.
    """
    digest = hashlib.sha256(os.fsencode(state_dir.absolute())).hexdigest()[:16]
    return f"{PARENT}/daemon.{digest}"


def prepare_parent(parent: str, seconds: float, root: Path = ROOT) -> None:
    """Sweep what a daemon before this one left under ``parent``, then make it in every
    hierarchy; under v2, with the controllers passed down to it."""
    sweep(parent, seconds, root)
    unified = is_unified(root)
    for hierarchy in hierarchies(unified):
        (root / hierarchy / parent).mkdir(parents=True, exist_ok=True)
    if unified:  # each level from the root down enables them for the next (as runc does for its own)
        level = root
        for part in ("", *Path(parent).parts):
            level = level / part
            (level / "cgroup.subtree_control").write_text(V2_CONTROLLERS)


def remove_parent(parent: str, seconds: float, root: Path = ROOT) -> None:
    """Remove ``parent`` and what is still under it (the daemon stops: its connections are done)."""
    sweep(parent, seconds, root)
    for hierarchy in hierarchies(is_unified(root)):
        with contextlib.suppress(OSError):  # not made, or a cgroup left behind: the next start sweeps it
            os.rmdir(root / hierarchy / parent)


def sweep(parent: str, seconds: float, root: Path = ROOT) -> list[Path]:
    """Remove every connection cgroup under ``parent``, killing what is still in one (a daemon
    killed with SIGKILL left them; its containers are gone, so their processes are going or gone).
    Returns the directories still there after ``seconds``, each logged: the daemon goes on."""
    found = [
        (root / hierarchy, f"/{parent}/{child.name}")
        for hierarchy in hierarchies(is_unified(root))
        if (root / hierarchy / parent).is_dir()
        for child in (root / hierarchy / parent).iterdir()
        if child.is_dir()
    ]
    stale, deadline = found, time.monotonic() + seconds
    while stale:
        stale = [(tree, cgroup) for tree, cgroup in stale if not _remove_or_kill(tree, cgroup)]
        if not stale or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if found:
        log.info("stale cgroups swept parent=%s removed=%d left=%d", parent, len(found) - len(stale), len(stale))
    left = [tree / cgroup[1:] for tree, cgroup in stale]
    for directory in left:
        log.warning("stale cgroup not removed directory=%s", directory)
    return left


def _remove_or_kill(tree: Path, cgroup: str) -> bool:
    """Remove ``cgroup`` of the hierarchy mounted at ``tree``; True once it is gone, else every
    process still in it is killed."""
    directory = tree / cgroup[1:]
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError:  # EBUSY: processes in it
        with contextlib.suppress(OSError, ValueError):
            if (directory / "cgroup.kill").exists():  # v2, Linux 5.14: the kernel kills them all
                (directory / "cgroup.kill").write_text("1")
            else:
                for pid in (directory / "cgroup.procs").read_text().split():
                    _kill_if_in(int(pid), cgroup)
        return False
    return True


def _kill_if_in(pid: int, cgroup: str) -> None:
    """SIGKILL ``pid`` if it is in ``cgroup``, through a pidfd opened before looking: a pid that
    was reused meanwhile names a process outside the cgroup, which is spared."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if any(line.split(":", 2)[-1] == cgroup for line in lines):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:  # it has exited
        pass
    finally:
        os.close(pidfd)


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
    def create(cls, parent: str, name: str, limits: Limits, root: Path = ROOT) -> ConnectionCgroup:
        """Make ``parent/name`` with ``limits``; ``parent`` was made by ``prepare_parent``."""
        unified = is_unified(root)
        made = cls([])
        try:
            for hierarchy, files in limit_files(limits, unified).items():
                directory = root / hierarchy / parent / name
                directory.mkdir()
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
