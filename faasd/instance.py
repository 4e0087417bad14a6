"""One container of one version, from its start to its end.

A container is *started* (bundle written, ``runc run``) and becomes *ready* once its handler
has connected to ``/control.sock`` and waits there. It is then given one connection, or, when
its version allows ``reuse`` above one, up to that many one after another, the handler coming
back to ``/control.sock`` for each. A ready container may wait in a warm pool (``faasd.pool``)
before its connection arrives; a connection that finds none starts its own.

Whether the handler answered a connection is read from the client socket's own counters
(``tcpinfo``) on the daemon's copy, never guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
import uuid
from enum import Enum
from typing import Any, Protocol

from faasd import metrics
from faasd.admission import Starts
from faasd.channel import Channel, uses_channel
from faasd.config import Config
from faasd.errors import RuncError, RuntimeFailure
from faasd.handoff import ControlSocket, encode_metadata
from faasd.logs import FunctionLog
from faasd.registry import Version
from faasd.sandbox.runc import Process, Runc
from faasd.sandbox.spec import CONTROL_SOCKET_IN_BUNDLE, SpecTemplate
from faasd.tcpinfo import bytes_written

log = logging.getLogger(__name__)

# How long runc may take to exit after its container was killed before we stop waiting.
KILL_GRACE_SECONDS = 5.0


class Outcome(Enum):
    """How a connection ended, from the daemon's point of view."""

    SERVED = "served"  # the handler answered and was done with it
    START_FAILED = "start_failed"  # the container exited before taking the connection
    START_TIMEOUT = "start_timeout"  # the handler never connected to /control.sock
    HUNG_UP = "hung_up"  # the handler hung up /control.sock (or died) before it took the connection
    NO_ANSWER = "no_answer"  # the handler took the connection and was done without writing a byte
    DEADLINE = "deadline"  # killed at the deadline, after it had started answering
    DEADLINE_SILENT = "deadline_silent"  # killed at the deadline without having written a byte
    DIED_WAITING = "died_waiting"  # a warm container that exited while it waited for a connection


class Waited(Enum):
    """What ended a wait on a running container."""

    HANDLER = "handler"  # its handler connected to /control.sock
    EXITED = "exited"
    TIMED_OUT = "timed_out"


def _silent(handler: socket.socket) -> bool:
    """A waiting handler sends nothing: anything to read on its end, EOF included, means it
    hung up (or died) or broke the protocol; either way it takes no connection."""
    try:
        handler.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class Sandbox(Protocol):
    """What a pool and the dispatcher drive: a never-used sandbox for one connection (or, under
    reuse, a few), a runc container (``Instance``) or a child of a template (``ForkConnection``)."""

    version: Version
    id: str
    served: int
    started: bool
    start_failure: Outcome | None

    @property
    def ready(self) -> bool: ...

    @property
    def running(self) -> bool: ...

    @property
    def exit_code(self) -> int | None: ...

    async def start(self) -> Outcome | None: ...

    async def serve(self, client: socket.socket, peer: tuple[str, int], prefix: str = "") -> Outcome: ...

    async def stop(self) -> None: ...

    async def wait_exit(self) -> None: ...

    def record(self, **fields: object) -> None: ...


class Instance:
    """One container of ``version``, run from the version's ``template`` as the host's ``runc``,
    started in its turn of ``starts``."""

    def __init__(
        self,
        config: Config,
        runc: Runc,
        starts: Starts,
        version: Version,
        template: SpecTemplate,
        function_log: FunctionLog,
    ) -> None:
        self.version = version
        self.id = new_request_id()  # its first connection's request id, and its bundle's name
        self.container_id = f"{version.function}-{self.id}"
        self.served = 0
        self._config = config
        self._runc = runc
        self._starts = starts
        self._template = template
        # Named by the request id alone: the control socket's path must fit sun_path (108 bytes).
        self._bundle = config.bundles_dir / self.id
        self._capture = function_log.capture(self.id)
        # Where the handler waits for a connection: /control.sock, or Node's channel (``faasd.channel``).
        self._control: ControlSocket | Channel | None = None
        self._handler: socket.socket | None = None  # the handler's end while it waits for a connection
        self._proc: Process | None = None
        self._exited: asyncio.Future[int] | None = None
        self.started = False  # ``start`` was called
        self.start_failure: Outcome | None = None  # why ``start`` could not make it ready

    @property
    def ready(self) -> bool:
        """Its handler waits for a connection in a container that still runs."""
        return self._handler is not None and self.running and _silent(self._handler)

    @property
    def running(self) -> bool:
        """Its container was started and has not exited."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def exit_code(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def wait_exit(self) -> None:
        """Return once the container has exited."""
        if self._exited is not None:
            await asyncio.shield(self._exited)

    async def start(self) -> Outcome | None:
        """Start the container and wait until its handler is ready; ``None`` then, else why not.

        It first waits for its turn (``Starts``). A container that could not get ready is left
        for ``stop`` to end.
        """
        self.started = True
        try:
            async with self._starts.turn():  # the start timeout runs from here
                self.start_failure = await self._start()
        except Exception:  # a full disk, no fds left: a failed start all the same, never a hang
            log.exception("container not started function=%s id=%s", self.version.function, self.id)
            self.start_failure = Outcome.START_FAILED
        return self.start_failure

    async def _start(self) -> Outcome | None:
        started = time.monotonic()
        self._bundle.mkdir(mode=0o711)  # the container's root (an unprivileged host uid) binds the control socket
        base = self._config.userns_base
        owner = (base + self.version.uid, base + self.version.gid)
        # A few KiB onto the run dir's tmpfs: cheaper inline than a thread hop.
        (self._bundle / "config.json").write_bytes(self._template.render(self.container_id))
        try:
            if uses_channel(self.version.config.env):
                self._control = channel = Channel()
                try:
                    self._proc = self._runc.run_with_fd(
                        self.container_id,
                        self._bundle,
                        self._capture.stdout,
                        self._capture.stderr,
                        channel.container_end(),
                    )
                finally:
                    channel.started()
            else:
                self._control = ControlSocket(self._bundle / CONTROL_SOCKET_IN_BUNDLE, owner)
                self._proc = await self._runc.run(
                    self.container_id, self._bundle, self._capture.stdout, self._capture.stderr
                )
        except RuntimeFailure as exc:
            log.error("runc failed function=%s id=%s error=%s", self.version.function, self.id, exc)
            return Outcome.START_FAILED
        self._exited = asyncio.ensure_future(self._proc.wait())
        waited = await self._wait(self._config.start_timeout_seconds, for_handler=True)
        if waited is Waited.EXITED:
            return Outcome.START_FAILED
        if waited is Waited.TIMED_OUT:
            return Outcome.START_TIMEOUT
        metrics.CONTAINER_START.labels(self.version.function).observe(time.monotonic() - started)
        return None

    async def serve(self, client: socket.socket, peer: tuple[str, int], prefix: str = "") -> Outcome:
        """Give ``client`` to the waiting handler; return once the handler is done with it."""
        assert self._handler is not None and self._control is not None, "serve() needs a ready container"
        handler, self._handler = self._handler, None
        self.served += 1
        more = self.served < self.version.limits.reuse
        timeout = self.version.limits.timeout_seconds
        metadata = {
            "id": self.id if self.served == 1 else new_request_id(),
            "function": self.version.function,
            "version": self.version.number,
            "deadline": int((time.time() + timeout) * 1000),
            "peer": f"{peer[0]}:{peer[1]}",
        }
        if prefix:
            metadata["prefix"] = prefix  # routed by path: the app is mounted under it
        if more:
            metadata["more"] = True  # come back to /control.sock for the next connection
        else:
            # Before the hand-over, not after: the handler may run before this thread does again.
            self._control.close()
        try:
            self._control.hand_over(handler, client, encode_metadata(metadata))
        except OSError as exc:  # it hung up, or died, since it was found waiting
            log.warning("handler hung up function=%s id=%s error=%s", self.version.function, self.id, exc)
            return Outcome.HUNG_UP
        waited = await self._wait(timeout, for_handler=more)
        answered = bytes_written(client) != 0
        if waited is Waited.TIMED_OUT:
            await self._kill()
            return Outcome.DEADLINE if answered else Outcome.DEADLINE_SILENT
        return Outcome.SERVED if answered else Outcome.NO_ANSWER

    def hand_over_channel(self, channel: socket.socket, metadata: dict[str, object]) -> None:
        """Give the waiting handler ``channel`` in place of a client: it is a template (fork mode),
        fed connections through it, and this container takes no other."""
        assert self._handler is not None and self._control is not None, "a channel needs a ready container"
        handler, self._handler = self._handler, None
        self._control.close()
        ControlSocket.hand_over(handler, channel, encode_metadata(metadata))

    async def stop(self) -> None:
        """End the container if it still runs and remove what it leaves; safe to call twice."""
        if self._handler is not None:
            self._handler.close()
            self._handler = None
        if self._control is not None:
            self._control.close()
        try:
            if self._proc is not None and self._proc.returncode is None:
                await self._kill()
            shutil.rmtree(self._bundle, ignore_errors=True)
        finally:
            # Even when cancelled during the kill: the pipes are fds and loop readers.
            await self._capture.close()

    def record(self, **fields: object) -> None:
        """A line about this container in its function's log."""
        self._capture.record(**fields)

    async def _wait(self, timeout: float, *, for_handler: bool) -> Waited:
        """Wait for the container to exit or, ``for_handler``, for its handler to (re)connect."""
        assert self._control is not None and self._exited is not None
        if not for_handler:
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), timeout)
            except TimeoutError:
                return Waited.TIMED_OUT
            return Waited.EXITED
        waiting = asyncio.ensure_future(self._control.wait_for_handler())
        try:
            either: set[asyncio.Future[Any]] = {waiting, self._exited}
            done, _ = await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            # Until the cancelled accept has run, its reader stays registered on the control
            # socket's fd: closed under it (``stop`` right after a timeout), that fd number could
            # come back as the next child's pidfd, and the loop would never see that child exit.
            await asyncio.wait({waiting})
        if self._exited in done:
            if waiting in done and not waiting.exception():
                waiting.result().close()
            return Waited.EXITED
        if waiting in done:
            self._handler = waiting.result()  # an accept that failed (out of fds) raises here
            return Waited.HANDLER
        return Waited.TIMED_OUT

    async def _kill(self) -> None:
        """Kill the container and wait for ``runc run`` to exit; force-delete if it will not."""
        assert self._proc is not None
        with contextlib.suppress(RuncError):
            await self._runc.kill(self.container_id)
        try:
            await asyncio.wait_for(self._proc.wait(), KILL_GRACE_SECONDS)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
            with contextlib.suppress(RuncError):
                await self._runc.delete(self.container_id)
