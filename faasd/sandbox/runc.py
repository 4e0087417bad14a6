"""The runc command line, driven asynchronously and never through a shell.

One ``Runc`` holds the global flags; each verb has a pure argv builder (tested without
root) and an async method that runs it. A non-zero exit becomes ``RuncError`` with stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from faasd.errors import RuncError, RuntimeFailure

# Where a container finds the one extra fd ``run_with_fd`` passes: the first after stdio.
EXTRA_FD = 3


class Process(Protocol):
    """What the daemon needs of a running ``runc run``: asyncio's Process, or a ``Spawned``."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class Runc:
    """runc with faasd's own state root, so faasd's containers are never confused with others."""

    binary: str
    root: Path

    def _global(self) -> list[str]:
        return [self.binary, "--root", str(self.root)]

    def run_args(self, container_id: str, bundle: Path, extra_fds: int = 0) -> list[str]:
        # Foreground ``run``: runc copies our stdio to the container's (through pipes), waits for
        # it, and deletes it when it exits, so one process tells us the container's whole life.
        # ``--preserve-fds N`` passes fds 3..3+N-1 through as they are (an fd cannot go through a pipe).
        preserve = ["--preserve-fds", str(extra_fds)] if extra_fds else []
        return [*self._global(), "run", *preserve, "--bundle", str(bundle), container_id]

    def kill_args(self, container_id: str, signal: str = "KILL") -> list[str]:
        return [*self._global(), "kill", container_id, signal]

    def delete_args(self, container_id: str) -> list[str]:
        return [*self._global(), "delete", "--force", container_id]

    def list_args(self) -> list[str]:
        return [*self._global(), "list", "--format", "json"]

    async def run(self, container_id: str, bundle: Path, stdout: int, stderr: int) -> asyncio.subprocess.Process:
        """Start ``runc run`` with the container's stdout and stderr on these fds.

        The caller waits for the process, whose exit is the container's.
        """
        try:
            return await asyncio.create_subprocess_exec(
                *self.run_args(container_id, bundle),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot execute {self.binary}: {exc.strerror}") from exc

    def run_with_fd(self, container_id: str, bundle: Path, stdout: int, stderr: int, extra: int) -> Spawned:
        """``run``, with ``extra`` passed to the container as fd 3 (``EXTRA_FD``).

        asyncio's subprocesses keep an fd at its own number; only posix_spawn's file actions
        place it at 3. Every other fd of the daemon is close-on-exec (PEP 446), and runc closes
        what it was not told to pass before the container's process starts.
        """
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
            (os.POSIX_SPAWN_DUP2, extra, EXTRA_FD),
        ]
        argv = self.run_args(container_id, bundle, extra_fds=1)
        try:
            pid = os.posix_spawnp(
                self.binary,
                argv,
                os.environ,
                file_actions=actions,
                setsid=True,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # what asyncio's restore_signals resets
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot execute {self.binary}: {exc.strerror}") from exc
        return Spawned(pid)

    async def kill(self, container_id: str, signal: str = "KILL") -> None:
        await self._check("kill", self.kill_args(container_id, signal))

    async def delete(self, container_id: str) -> None:
        await self._check("delete", self.delete_args(container_id))

    async def container_ids(self) -> list[str]:
        """The ids of every container under faasd's runc root."""
        out = await self._check("list", self.list_args())
        return [c["id"] for c in json.loads(out or "null") or []]

    async def _check(self, verb: str, argv: list[str]) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot execute {self.binary}: {exc.strerror}") from exc
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuncError(verb, proc.returncode or 0, err.decode(errors="replace"))
        return out.decode()


class Spawned:
    """A ``runc run`` started by ``run_with_fd``: its exit is read from a pidfd on the event loop,
    as the daemon's child watcher reads those of asyncio's subprocesses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(pid)  # a child not yet reaped: never a reused pid
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status = os.waitpid(self.pid, 0)  # it exited: the pidfd said so, this does not block
        self.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
