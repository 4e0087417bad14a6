"""A version's template (fork mode): a container whose app is loaded once and which then forks.

It is started like any container of its version, from the same config.json but for its seccomp
filter (``seccomp.template_profile``). Once its handler waits on ``/control.sock`` it is handed,
in place of a client, one end of a channel (``AF_UNIX``, ``SOCK_SEQPACKET``) with the metadata
``"template": true``. The daemon's first message on the channel says how to build a child (the
size of its /tmp, and its seccomp filter as BPF); the SDK's ``serve`` answers ready, or refused.
Each later message is a connection: its metadata and its fds (``fork.py``). A handler that does
not use the SDK cannot answer, and the template is refused.

Closing the channel drains the template: it forks no more, waits for its children, and exits.

The template process is not the container's pid 1: the SDK forks it off, and pid 1 stays behind
only to reap, so that the template's death (its app crashed, or was killed) ends no child serving
a connection (the death of a pid namespace's pid 1 would kill them all). Its ready reply comes
with its host pid (``SO_PASSCRED``): the daemon watches it through a pidfd, and a template that
died or hung is replaced at once, its container drained like a redeploy's: the children it forked
finish, then pid 1 exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import struct

from faasd.instance import Instance, Outcome
from faasd.limits import Limits
from faasd.registry import Version
from faasd.sandbox.spec import SHM_BYTES

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 1024
UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
# The container uid a template runs as when its image asks for root: a process without
# CAP_SETFCAP may not map uid 0 into the user namespace of its children (Linux 5.12,
# verify_root_map), and a template holds no capability.
FORK_ROOT_UID = 1000
NOT_A_TEMPLATE = "its handler did not answer as a template: fork mode needs serve() from faas_handler.py"


def setup_message(limits: Limits, child_filter: bytes) -> bytes:
    """The channel's first message: a JSON line (the sizes of a child's /tmp and /dev/shm, as a
    container's, 0 for read-only), then the child's seccomp filter."""
    sizes = {"tmp_bytes": limits.tmp_bytes, "shm_bytes": min(limits.tmp_bytes, SHM_BYTES)}
    return json.dumps(sizes).encode() + b"\n" + child_filter


def read_reply(reply: bytes) -> str | None:
    """None when the template is ready, else why it is not one."""
    try:
        value = json.loads(reply)
    except ValueError:
        return NOT_A_TEMPLATE
    if not isinstance(value, dict) or value.get("template") not in ("ready", "refused"):
        return NOT_A_TEMPLATE
    if value["template"] == "refused":
        return f"its handler refused to be a template: {str(value.get('reason'))[:200]}"
    return None


async def receive_with_pid(sock: socket.socket, size: int) -> tuple[bytes, int | None]:
    """One message on ``sock`` (non-blocking, ``SO_PASSCRED`` set) and its sender's pid as the
    daemon sees it (its host pid); ``b""`` once the other end is closed."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[tuple[bytes, int | None]] = loop.create_future()

    def readable() -> None:
        try:
            data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(UCRED.size))
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        pids = (UCRED.unpack(d)[0] for level, kind, d in ancillary if kind == socket.SCM_CREDENTIALS)
        if not received.done():
            received.set_result((data, next(pids, None) or None))

    loop.add_reader(sock.fileno(), readable)
    try:
        return await received
    finally:
        loop.remove_reader(sock.fileno())


def template_version(version: Version) -> Version:
    """``version`` as its template runs it: as ``FORK_ROOT_UID`` where the image says root."""
    return dataclasses.replace(version, uid=version.uid or FORK_ROOT_UID)


class Template:
    """One template container of a version, and the daemon's end of its channel."""

    def __init__(self, instance: Instance, setup: bytes, ready_timeout: float) -> None:
        self.instance = instance
        self._setup = setup
        self._ready_timeout = ready_timeout
        self._channel: socket.socket | None = None
        self._pidfd = -1  # the template process's, once it is ready
        self._ended = False  # the template process has exited (its container may still run)
        self.refusal: str | None = None  # why it is not a template, when it answered so

    @property
    def alive(self) -> bool:
        """It takes connections: its channel is open and its process runs."""
        return self._channel is not None and not self._ended and self.instance.exit_code is None

    async def start(self) -> Outcome | None:
        """Start the container and make it a template; ``None`` once it is ready, else why not."""
        failure = await self.instance.start()
        if failure is not None:
            return failure
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            version = self.instance.version
            metadata = {"id": self.instance.id, "function": version.function, "version": version.number}
            self.instance.hand_over_channel(theirs, {**metadata, "template": True})
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        self._channel = ours
        try:
            ours.send(self._setup)  # a fresh socket's buffer holds a few KiB: this never blocks
            reply, pid = await self._reply()
        except OSError as exc:
            reply, pid, self.refusal = None, None, f"its channel failed: {exc.strerror}"
        if reply is not None:
            self.refusal = read_reply(reply)
        if self.refusal is None and reply is not None and pid is not None and self._watch(pid):
            return None
        self.refusal = self.refusal or NOT_A_TEMPLATE
        self.close_channel()
        return Outcome.START_FAILED

    async def _reply(self) -> tuple[bytes | None, int | None]:
        """The template's answer to the setup and its host pid; None if it exited or said
        nothing in time."""
        assert self._channel is not None
        answer = asyncio.ensure_future(receive_with_pid(self._channel, MAX_REPLY_BYTES))
        exited = asyncio.ensure_future(self.instance.wait_exit())
        try:
            await asyncio.wait({answer, exited}, timeout=self._ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            answer.cancel()
        if answer.done() and not answer.cancelled():
            reply, pid = answer.result()
            return reply or None, pid
        return None, None

    def _watch(self, pid: int) -> bool:
        """Watch the template process through a pidfd; False if it is gone already."""
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_end)
        return True

    def _on_end(self) -> None:
        if self._channel is not None:  # not drained: it crashed, or was killed
            log.warning("template process ended function=%s id=%s", self.instance.version.function, self.instance.id)
        self._ended = True
        self._forget_pidfd()

    def _forget_pidfd(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def send(self, payload: bytes, fds: list[int]) -> None:
        """One connection's metadata and fds; raises ``OSError`` when the template cannot take it
        (gone, or so far behind that its channel is full)."""
        if self._channel is None:
            raise BrokenPipeError("the template's channel is closed")
        socket.send_fds(self._channel, [payload], fds)

    def close_channel(self) -> None:
        """Send it no more connections: it finishes its children's and exits."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def end(self) -> None:
        """Kill the template process (dead or hung), not its container: the children it forked
        serve on, under the container's pid 1."""
        self.close_channel()
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def drain(self, seconds: float) -> None:
        """Close the channel, give the children still serving ``seconds`` to finish, then stop."""
        self.close_channel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.instance.wait_exit(), seconds)
        await self.stop()

    async def stop(self) -> None:
        """Kill the container, and with it any child still running (they live in its pid namespace)."""
        self.close_channel()
        self._forget_pidfd()
        await self.instance.stop()
