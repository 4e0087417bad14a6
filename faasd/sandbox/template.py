"""A version's template (fork mode): a container whose app is loaded once and which then forks.

It is started like any container of its version, from the same config.json but for its seccomp
filter (``seccomp.template_profile``). Once its handler waits on ``/control.sock`` it is handed,
in place of a client, one end of a channel (``AF_UNIX``, ``SOCK_SEQPACKET``) with the metadata
``"template": true``. The daemon's first message on the channel says how to build a child (the
size of its /tmp, and its seccomp filter as BPF); the SDK's ``serve`` answers ready, or refused.
Each later message is a connection: its metadata and its fds (``fork.py``). A handler that does
not use the SDK cannot answer, and the template is refused.

Closing the channel drains the template: it forks no more, waits for its children, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket

from faasd.instance import Instance, Outcome
from faasd.limits import Limits
from faasd.registry import Version
from faasd.sandbox.spec import SHM_BYTES

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 1024
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
        self.refusal: str | None = None  # why it is not a template, when it answered so

    @property
    def alive(self) -> bool:
        """It takes connections: its channel is open and its container runs."""
        return self._channel is not None and self.instance.exit_code is None

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
        ours.setblocking(False)
        self._channel = ours
        try:
            ours.send(self._setup)  # a fresh socket's buffer holds a few KiB: this never blocks
            reply = await self._reply()
        except OSError as exc:
            reply, self.refusal = None, f"its channel failed: {exc.strerror}"
        if reply is not None:
            self.refusal = read_reply(reply)
        if self.refusal is None and reply is not None:
            return None
        self.refusal = self.refusal or NOT_A_TEMPLATE
        self.close_channel()
        return Outcome.START_FAILED

    async def _reply(self) -> bytes | None:
        """The template's answer to the setup; None if it exited or said nothing in time."""
        assert self._channel is not None
        loop = asyncio.get_running_loop()
        answer = asyncio.ensure_future(loop.sock_recv(self._channel, MAX_REPLY_BYTES))
        exited = asyncio.ensure_future(self.instance.wait_exit())
        try:
            await asyncio.wait({answer, exited}, timeout=self._ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            answer.cancel()
        if answer.done() and not answer.cancelled():
            return answer.result() or None
        return None

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

    async def drain(self, seconds: float) -> None:
        """Close the channel, give the children still serving ``seconds`` to finish, then stop."""
        self.close_channel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.instance.wait_exit(), seconds)
        await self.instance.stop()

    async def stop(self) -> None:
        """Kill the template, and with it any child still running (they live in its pid namespace)."""
        self.close_channel()
        await self.instance.stop()
