"""Fork mode: each connection gets a fresh sandbox forked from its version's template.

A ``ForkConnection`` is a child of the version's template (``template.py``), forked ahead of
demand and kept ready by the version's warm pool as runc containers are (``ForkPool``; ``--warm``
caps how many wait). Starting one sends the template a message with the child's log pipes and one
end of a fresh socket pair, its *line*. The child sends a word on its line from inside its new
namespaces; with SO_PASSCRED the kernel adds the child's pid as the daemon sees it. The daemon
opens a pidfd on it, moves it into a cgroup of its own (``cgroups.py``) and answers; the child
drops its privileges and waits on its line. A connection is then handed to it there, with its
metadata, and no code of the function has run before. The pidfd tells the child's exit and takes
the kill at the deadline: the child is pid 1 of its pid namespace, so every process of the
connection ends with it.

``Templates`` keeps one template per version: started when a child is first asked for, replaced
when it dies or hangs (a child asked of a template that never forks it is asked of a new one,
the old one's process killed first), drained when the pool closes (a redeploy, rollback, rm) or
after ``idle_seconds`` without a child asked for. A template replaced takes no child with it: the
children it forked live under its container's pid 1, which outlives it (``template.py``), and
its container is drained as a redeploy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from faasd.admission import Admission
from faasd.config import Config
from faasd.handoff import encode_metadata
from faasd.instance import Outcome, Sandbox, new_request_id
from faasd.logs import FunctionLog
from faasd.pool import WarmPool
from faasd.registry import Version
from faasd.sandbox.cgroups import REMOVE_SECONDS, ConnectionCgroup, daemon_parent
from faasd.sandbox.template import Template, receive_with_pid
from faasd.tcpinfo import bytes_read, bytes_written

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


class ForkConnection:
    """One child of its version's template: a sandbox for one connection, ready before it comes."""

    exit_code: int | None = None  # the template reaps its children; the daemon sees their pidfd

    def __init__(self, config: Config, templates: Templates, function_log: FunctionLog) -> None:
        self.version = templates.version
        self.id = new_request_id()
        self.served = 0
        self.started = False
        self.start_failure: Outcome | None = None
        self._config = config
        self._templates = templates
        self._capture = function_log.capture(self.id)
        self._line: socket.socket | None = None
        self._pidfd = -1
        self._exited: asyncio.Future[None] | None = None
        self._cgroup: ConnectionCgroup | None = None
        self._cgroup_parent = daemon_parent(config.state_dir)

    @property
    def running(self) -> bool:
        """Its child was let go and has not exited."""
        return self._exited is not None and not self._exited.done()

    @property
    def ready(self) -> bool:
        """Its child waits for a connection."""
        return self.running and self._line is not None and not self.served

    async def wait_exit(self) -> None:
        if self._exited is not None:
            await asyncio.shield(self._exited)

    async def start(self) -> Outcome | None:
        """Have the template fork the child and let it go; ``None`` once it waits, else why not."""
        self.started = True
        try:
            self.start_failure = await self._start()
        except Exception:  # no fds left, no cgroup made: a failed start all the same, never a hang
            log.exception("fork child not started function=%s id=%s", self.version.function, self.id)
            self.start_failure = Outcome.START_FAILED
        return self.start_failure

    async def _start(self) -> Outcome | None:
        template = await self._templates.get()
        pid = None if template is None else await self._fork(template)
        if template is not None and pid is None:  # that template is dead or hung: one more try
            self._templates.replace(template)
            template = await self._templates.get()
            pid = None if template is None else await self._fork(template)
        if pid is None:
            return Outcome.START_FAILED
        self._admit(pid)
        return None if self.running else Outcome.START_FAILED

    async def serve(self, client: socket.socket, peer: tuple[str, int], prefix: str = "") -> Outcome:
        """Hand ``client`` to the waiting child; return once it is done or killed."""
        assert self._line is not None, "serve() needs a ready child"
        self.served = 1
        timeout = self.version.limits.timeout_seconds
        metadata = {
            "id": self.id,
            "function": self.version.function,
            "version": self.version.number,
            "deadline": int((time.time() + timeout) * 1000),
            "peer": f"{peer[0]}:{peer[1]}",
        }
        if prefix:
            metadata["prefix"] = prefix  # routed by path: the app is mounted under it
        client.setblocking(True)  # the flag is the open file's: the child's copy must block
        if not self._hand_over(client, metadata):
            # It died a moment ago (with its template's container, say) and never saw the client: a new one.
            return await self._serve_on_another(client, metadata, timeout)
        outcome = await self._wait(client, timeout)
        if outcome is Outcome.NO_ANSWER and bytes_read(client) == 0:
            # It took the client but died before reading a byte (its template's container killed,
            # taking it along): the connection is whole, so a new child gets it, once.
            return await self._serve_on_another(client, metadata, timeout)
        return outcome

    async def _serve_on_another(self, client: socket.socket, metadata: dict[str, object], timeout: float) -> Outcome:
        await self._release()
        if await self._start() is not None or not self._hand_over(client, metadata):
            return Outcome.START_FAILED
        return await self._wait(client, timeout)

    async def _wait(self, client: socket.socket, timeout: float) -> Outcome:
        """Wait for the child that has ``client`` to exit, or kill it at the deadline."""
        assert self._exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        except TimeoutError:
            self._kill()
            return Outcome.DEADLINE if bytes_written(client) else Outcome.DEADLINE_SILENT
        return Outcome.SERVED if bytes_written(client) else Outcome.NO_ANSWER

    def _hand_over(self, client: socket.socket, metadata: dict[str, object]) -> bool:
        """Send the child its connection; False if it is gone."""
        assert self._line is not None
        try:
            socket.send_fds(self._line, [encode_metadata(metadata)], [client.fileno()])
        except OSError:
            return False
        finally:
            self._close_line()
        return True

    async def _fork(self, template: Template) -> int | None:
        """Ask ``template`` for a child; its host pid, or None if it never came."""
        self._close_line()
        line, childs_line = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._line = line
        line.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        line.setblocking(False)
        child = {"id": self.id, "function": self.version.function, "version": self.version.number}
        with childs_line:
            try:
                template.send(
                    encode_metadata(child), [childs_line.fileno(), self._capture.stdout, self._capture.stderr]
                )
            except OSError as exc:
                log.warning("template refused a child function=%s error=%s", self.version.function, exc)
                return None
        return await self._child_pid(line, template)

    async def _child_pid(self, line: socket.socket, template: Template) -> int | None:
        """The pid the child's first word came with; None if it never came (its template died,
        or hung past the start timeout)."""
        word = asyncio.ensure_future(receive_with_pid(line, 16))
        exited = asyncio.ensure_future(template.instance.wait_exit())
        either: set[asyncio.Future[Any]] = {word, exited}
        try:
            await asyncio.wait(either, timeout=self._config.start_timeout_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            word.cancel()
            exited.cancel()
        if not word.done() or word.cancelled():
            return None
        data, pid = word.result()
        return pid if data == b"started" else None

    def _admit(self, pid: int) -> None:
        """Open a pidfd on the child, move it into its cgroup, and let it go on."""
        assert self._line is not None
        try:
            self._pidfd = os.pidfd_open(pid)
            name = f"{self.version.function}-{self.id}"
            self._cgroup = ConnectionCgroup.create(self._cgroup_parent, name, self.version.limits)
            self._cgroup.place(pid)
            self._line.send(b"go")
        except OSError as exc:  # it died meanwhile, or the cgroup could not be made: no go
            log.error("fork child not admitted function=%s id=%s error=%s", self.version.function, self.id, exc)
            self._kill()
            self._close_line()
            return
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    def _kill(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _close_line(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None

    async def stop(self) -> None:
        """End the child if it still runs, and remove its cgroup; safe to call twice."""
        try:
            await self._release()
        finally:
            await self._capture.close()

    async def _release(self) -> None:
        """End the child if it still runs; close its line and pidfd, remove its cgroup."""
        self._close_line()
        if self.running:
            self._kill()
            await self.wait_exit()
        self._exited = None
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._cgroup is not None:
            await self._remove_cgroup(self._cgroup)
            self._cgroup = None

    @staticmethod
    async def _remove_cgroup(cgroup: ConnectionCgroup) -> None:
        deadline = time.monotonic() + REMOVE_SECONDS
        while not cgroup.remove():
            if time.monotonic() > deadline:
                log.warning("cgroup left behind directories=%s", cgroup.directories)
                return
            await asyncio.sleep(0.01)

    def record(self, **fields: object) -> None:
        self._capture.record(**fields, sandbox="fork")


class Templates:
    """The template of one version in fork mode: one at a time, started when first needed."""

    def __init__(self, version: Version, new_template: Callable[[], Template], idle_seconds: float) -> None:
        self.version = version
        self._new_template = new_template
        self._idle_seconds = idle_seconds
        self._current: Template | None = None
        self._starting: asyncio.Future[Template | None] | None = None
        self._last_use = time.monotonic()
        self._idle_check: asyncio.TimerHandle | None = None
        self._paused_until = 0.0
        self._failures = 0
        self._stops: set[asyncio.Task[None]] = set()
        self._closed = False

    async def get(self) -> Template | None:
        """The ready template, started now if there is none; None if it could not start."""
        self._last_use = time.monotonic()
        self._schedule_idle_check()
        if self._current is not None and self._current.alive:
            return self._current
        if self._current is not None:  # it died: start another
            self._replaced(self._current)
        if self._closed or time.monotonic() < self._paused_until:
            return None
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> Template | None:
        template = self._new_template()
        try:
            failure = await template.start()
        except BaseException:
            self._stop_in_background(template)
            raise
        finally:
            self._starting = None
        if failure is not None or self._closed:
            self._failures += 1
            backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2**self._failures) if failure else 0.0
            self._paused_until = time.monotonic() + backoff
            log.warning(
                "template not started function=%s version=%s reason=%s backoff_s=%.1f",
                self.version.function,
                self.version.number,
                template.refusal or (failure.value if failure else "closed"),
                backoff,
            )
            template.instance.record(version=self.version.number, outcome="template_failed", reason=template.refusal)
            self._stop_in_background(template)
            return None
        self._failures = 0
        self._current = template
        log.info(
            "template ready function=%s version=%s id=%s",
            self.version.function,
            self.version.number,
            template.instance.id,
        )
        return template

    def replace(self, template: Template) -> None:
        """End ``template`` (dead, or hung on a child): the next child asked for starts another."""
        template.end()  # even if no longer current: drained for being idle, it would hang its drain
        if self._current is template:  # else it was replaced or drained already
            log.warning("template replaced function=%s id=%s", self.version.function, template.instance.id)
            self._replaced(template)

    def _replaced(self, template: Template) -> None:
        """End the current template and drain its container: the children it forked, serving or
        waiting in the pool, live on under the container's pid 1 and are used. The pool stops
        those still waiting within ``idle_seconds``, and each ends by its deadline."""
        self._current = None
        template.end()
        self._stop_in_background(template, drain=self.version.limits.timeout_seconds + self._idle_seconds)

    def _stop_in_background(self, template: Template, drain: float = 0.0) -> None:
        """Stop ``template``'s container now, or once its children are done within ``drain`` seconds."""
        work = template.drain(drain) if drain else template.stop()
        task = asyncio.create_task(work)
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def close(self) -> None:
        """Drain the template: the children it forked finish (each within its deadline)."""
        self._closed = True
        if self._idle_check is not None:
            self._idle_check.cancel()
        if self._starting is not None:
            await asyncio.wait({self._starting})
        if self._current is not None:
            self._stop_in_background(self._current, drain=self.version.limits.timeout_seconds)
            self._current = None
        while self._stops:
            await asyncio.wait(set(self._stops))

    def _schedule_idle_check(self) -> None:
        if self._idle_check is None and not self._closed:
            self._idle_check = asyncio.get_running_loop().call_later(self._idle_seconds, self._on_idle_check)

    def _on_idle_check(self) -> None:
        """Drain the template if no child was asked for in ``idle_seconds``; else look again later."""
        self._idle_check = None
        quiet = time.monotonic() - self._last_use
        if quiet < self._idle_seconds:
            self._idle_check = asyncio.get_running_loop().call_later(self._idle_seconds - quiet, self._on_idle_check)
        elif self._current is not None:
            log.info("template drained function=%s idle_s=%.0f", self.version.function, quiet)
            self._stop_in_background(self._current, drain=self.version.limits.timeout_seconds)
            self._current = None


class ForkPool(WarmPool):
    """A warm pool of a fork-mode version: its ready sandboxes are children of ``templates``."""

    def __init__(
        self,
        templates: Templates,
        new_instance: Callable[[], Sandbox],
        admission: Admission,
        idle_seconds: float,
        start_bound: float,
    ) -> None:
        super().__init__(templates.version, new_instance, admission, idle_seconds, start_bound)
        self.templates = templates

    async def close(self) -> None:
        """Stop the children waiting, then drain the template."""
        await super().close()
        await self.templates.close()
