"""The runc command line, driven asynchronously and never through a shell.

One ``Runc`` holds the global flags; each verb has a pure argv builder (tested without
root) and an async method that runs it. A non-zero exit becomes ``RuncError`` with stderr.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import RuncError, RuntimeFailure


@dataclass(frozen=True)
class Runc:
    """runc with faasd's own state root, so faasd's containers are never confused with others."""

    binary: str
    root: Path

    def _global(self) -> list[str]:
        return [self.binary, "--root", str(self.root)]

    def run_args(self, container_id: str, bundle: Path) -> list[str]:
        # Foreground ``run``: runc passes our stdio straight to the container, waits for it,
        # and deletes it when it exits, so one process tells us the container's whole life.
        return [*self._global(), "run", "--bundle", str(bundle), container_id]

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
