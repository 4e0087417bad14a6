"""One-shot containers: code run before it is deployed, or once, in a runc container of a runtime.

The container is built like a function's (``faasd.sandbox.spec``: read-only rootfs, user
namespace, no network, no capabilities, seccomp, limits), without the control socket, plus bind
mounts onto mount points the runtime's wrapper layer provides. Its stdout and stderr are
collected up to a bound (the last bytes are kept: an installer's last lines say what failed),
or stdout is copied to a file up to a bound (a build's output), and it is killed at its timeout
or when it writes past that bound. Nothing of it runs on the host as root.

Each one holds a container slot of ``faasd.admission`` while it runs, as a function's container
does, so runs, jobs, installs and deploy-time checks cannot take the daemon past
``--max-containers``. They share one bucket (``SLOT``), which no function can be named, so
together they take at most ``--max-containers-per-function``: one-shots cannot crowd out every
function either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from faasd.admission import Admission, Overloaded
from faasd.channel import CHANNEL_ENV
from faasd.config import Config
from faasd.errors import Busy, RuncError
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.sandbox.runc import Runc
from faasd.sandbox.spec import CONTROL_SOCKET, build_spec

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 256 * 1024  # of each stream, the last ones
READ_BYTES = 65536
KILL_GRACE_SECONDS = 5.0
SLOT = "(one-shot)"  # the admission bucket of one-shot containers: not a valid function name
LineSink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class Mount:
    """A host directory (or file) bound into the container."""

    source: Path
    destination: str
    writable: bool = False

    def spec(self) -> dict[str, object]:
        options = ["rbind", "nosuid", "nodev", "rw" if self.writable else "ro"]
        return {"destination": self.destination, "type": "bind", "source": str(self.source), "options": options}


@dataclass(frozen=True)
class Tmpfs:
    """A writable tmpfs of at most ``size`` bytes (charged to the container's memory too)."""

    destination: str
    size: int

    def spec(self) -> dict[str, object]:
        options = ["nosuid", "nodev", "mode=1777", f"size={self.size}"]
        return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs", "options": options}


@dataclass(frozen=True)
class Output:
    """Where a container's stdout goes whole, instead of keeping its tail: at most ``limit`` bytes."""

    file: BinaryIO
    limit: int


@dataclass(frozen=True)
class Finished:
    """How a one-shot container ended and what it wrote."""

    exit_code: int | None  # None when killed, at its timeout or past its output's limit
    stdout: bytes
    stderr: bytes
    duration_ms: float
    output_over: bool = False  # killed for writing more than its Output's limit

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None and not self.output_over


@dataclass(frozen=True)
class RootfsImage:
    """A mounted rootfs and what to run it as."""

    rootfs: Path
    config: ImageConfig
    uid: int
    gid: int


async def read_tail(
    stream: asyncio.StreamReader | None, limit: int = MAX_OUTPUT_BYTES, on_line: LineSink | None = None
) -> bytes:
    """Everything ``stream`` gives until its end, less all but the last ``limit`` bytes; with
    ``on_line``, each whole line is also given to it the moment it ends (one longer than
    ``limit`` is left out: memory stays bounded whatever the container writes)."""
    kept = bytearray()
    line = bytearray()
    skipping = False  # the rest of a line already over the limit
    while stream is not None and (chunk := await stream.read(READ_BYTES)):
        kept += chunk
        if len(kept) > limit:
            del kept[: len(kept) - limit]
        if on_line is not None:
            line += chunk
            while (end := line.find(b"\n")) >= 0:
                if not skipping and end <= limit:
                    await on_line(bytes(line[:end]))
                skipping = False
                del line[: end + 1]
            if len(line) > limit:
                line.clear()
                skipping = True
    return bytes(kept)


async def copy_out(stream: asyncio.StreamReader | None, output: Output) -> bool:
    """Copy ``stream`` to ``output.file`` (in a thread: a disk write must not hold the loop);
    False, having stopped, once it passes the limit."""
    written = 0
    while stream is not None and (chunk := await stream.read(READ_BYTES)):
        written += len(chunk)
        if written > output.limit:
            return False
        await asyncio.to_thread(output.file.write, chunk)
    return True


def drained(stream: asyncio.StreamReader | None) -> asyncio.Future[object]:
    """Read on, and drop, what a container still writes to ``stream``: asyncio tells a process's
    end only once its pipes have ended, so a pipe no one reads would keep ``wait()`` waiting."""
    return asyncio.ensure_future(read_tail(stream, 0))


class OneShot:
    """Runs containers that do one thing and exit, each in a bundle of its own."""

    def __init__(self, config: Config, runc: Runc, admission: Admission) -> None:
        self._config = config
        self._runc = runc
        self._admission = admission

    async def run(
        self,
        image: RootfsImage,
        args: list[str],
        env: list[str],
        mounts: list[Mount | Tmpfs],
        limits: Limits,
        timeout: float,
        output: Output | None = None,
        on_line: LineSink | None = None,
    ) -> Finished:
        """Run ``args`` on ``image`` with ``env`` added and ``mounts`` bound, for ``timeout`` seconds
        at most, once it has a container slot (``Busy`` if none came free in time); its stdout
        into ``output`` when given, else also to ``on_line`` line by line as it comes. An error
        of ``on_line`` (its client gone) ends the container and is raised."""
        try:
            await self._admission.acquire(SLOT)
        except Overloaded as exc:
            raise Busy(f"no container slot for a one-shot container: {exc.reason}") from None
        try:
            return await self._run(image, args, env, mounts, limits, timeout, output, on_line)
        finally:
            self._admission.release(SLOT)

    async def _run(
        self,
        image: RootfsImage,
        args: list[str],
        env: list[str],
        mounts: list[Mount | Tmpfs],
        limits: Limits,
        timeout: float,
        output: Output | None,
        on_line: LineSink | None,
    ) -> Finished:
        key = uuid.uuid4().hex[:16]
        container_id = f"oneshot-{key}"
        config = dataclasses.replace(image.config, entrypoint=(), cmd=tuple(args), env=(*image.config.env, *env))
        spec = build_spec(
            config, image.uid, image.gid, limits, image.rootfs, "oneshot", self._config.userns_base, container_id
        )
        # No handoff here, by /control.sock or by Node's channel: the process runs and exits.
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != CONTROL_SOCKET]
        spec["process"]["env"] = [item for item in spec["process"]["env"] if item != CHANNEL_ENV]
        spec["mounts"] += [mount.spec() for mount in mounts]
        bundle = self._config.bundles_dir / container_id
        bundle.mkdir(mode=0o711)
        started = time.monotonic()
        try:
            (bundle / "config.json").write_text(json.dumps(spec))
            proc = await self._runc.run(container_id, bundle, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE)
            stdout_task: asyncio.Future[object] = asyncio.ensure_future(
                read_tail(proc.stdout, on_line=on_line) if output is None else copy_out(proc.stdout, output)
            )
            stderr_task = asyncio.ensure_future(read_tail(proc.stderr))
            exit_code: int | None = None
            over = False
            try:
                async with asyncio.timeout(timeout):
                    over = await asyncio.shield(stdout_task) is False
                    if not over:
                        await asyncio.shield(stderr_task)
                        exit_code = await proc.wait()
            except TimeoutError:
                pass
            except BaseException:  # on_line failed, or the caller was cancelled: end it first
                if stdout_task.done():
                    stdout_task = drained(proc.stdout)
                await self._kill(container_id, proc)
                stderr_task.cancel()
                raise
            if over:
                stdout_task = drained(proc.stdout)
            if exit_code is None:  # at its timeout, or past its output's limit
                await self._kill(container_id, proc)
            stderr = await stderr_task
            copied = await stdout_task
            stdout = copied if isinstance(copied, bytes) and output is None else b""
        finally:
            shutil.rmtree(bundle, ignore_errors=True)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("oneshot id=%s args=%s exit=%s duration_ms=%.1f", container_id, args[:3], exit_code, duration_ms)
        return Finished(exit_code, stdout, stderr, duration_ms, over)

    async def _kill(self, container_id: str, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(RuncError):
            await self._runc.kill(container_id)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            with contextlib.suppress(RuncError):
                await self._runc.delete(container_id)
