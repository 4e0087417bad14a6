"""One connection's life: a fresh container, the handoff, the deadline, the clean-up.

The daemon touches the client's bytes only when the handler could not: if the container
dies or never connects to ``/control.sock`` before the handoff, the client gets a 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from enum import Enum

from faasd.config import Config
from faasd.errors import RuncError, RuntimeFailure
from faasd.handoff import ControlSocket, encode_metadata
from faasd.images.store import ImageStore
from faasd.logs import FunctionLog
from faasd.registry import Version
from faasd.sandbox.runc import Runc
from faasd.sandbox.spec import Container, build_spec

log = logging.getLogger(__name__)

# How long runc may take to exit after its container was killed before we stop waiting.
KILL_GRACE_SECONDS = 5.0


class Outcome(Enum):
    """How a connection ended, from the daemon's point of view."""

    SERVED = "served"  # the handler took the connection and exited on its own
    START_FAILED = "start_failed"  # the container exited before taking the connection
    START_TIMEOUT = "start_timeout"  # the handler never connected to /control.sock
    DEADLINE = "deadline"  # the handler still ran at the deadline and was killed


def error_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer the daemon sends when the handler could not."""
    body = json.dumps({"error": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True)
class Dispatcher:
    """Serves connections of any function: everything one container needs, held once."""

    config: Config
    runc: Runc
    store: ImageStore

    async def serve(
        self, version: Version, client: socket.socket, peer: tuple[str, int], function_log: FunctionLog
    ) -> Outcome:
        """Run ``version`` in a new container that owns ``client``; return once it is gone."""
        request_id = uuid.uuid4().hex[:16]
        container_id = f"{version.function}-{request_id}"
        # Named by the request id alone: the control socket's path must fit sun_path (108 bytes).
        bundle = self.config.bundles_dir / request_id
        limits = self.config.limits
        started = time.monotonic()
        proc: asyncio.subprocess.Process | None = None
        capture = function_log.capture(request_id)
        bundle.mkdir(mode=0o700)
        control = ControlSocket(bundle / "control.sock")
        try:
            container = Container(
                id=container_id,
                rootfs=self.store.rootfs(version.function, version.number),
                control_socket=control.path,
                hostname=version.function,
            )
            spec = build_spec(version.config, version.uid, version.gid, limits, container)
            # A few KiB onto the run dir's tmpfs: cheaper inline than a thread hop.
            (bundle / "config.json").write_text(json.dumps(spec))
            payload = encode_metadata(
                {
                    "id": request_id,
                    "function": version.function,
                    "version": version.number,
                    "deadline": int((time.time() + limits.timeout_seconds) * 1000),
                    "peer": f"{peer[0]}:{peer[1]}",
                }
            )
            try:
                proc = await self.runc.run(container_id, bundle, capture.stdout, capture.stderr)
            except RuntimeFailure as exc:
                log.error("runc failed function=%s id=%s error=%s", version.function, request_id, exc)
                await self._answer(client, "the function's container could not be started")
                outcome = Outcome.START_FAILED
            else:
                outcome = await self._supervise(container_id, proc, control, client, payload, started)
        finally:
            control.close()
            client.close()
            try:
                if proc is not None and proc.returncode is None:
                    await self._kill(container_id, proc)
                shutil.rmtree(bundle, ignore_errors=True)
            finally:
                # Even when cancelled during the kill: the pipes are fds and loop readers.
                await capture.close()
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        capture.record(
            version=version.number,
            outcome=outcome.value,
            exit=proc.returncode if proc else None,
            duration_ms=duration_ms,
        )
        log.info(
            "connection function=%s version=%s id=%s peer=%s:%s outcome=%s exit=%s duration_ms=%.1f",
            version.function,
            version.number,
            request_id,
            peer[0],
            peer[1],
            outcome.value,
            proc.returncode if proc else None,
            duration_ms,
        )
        return outcome

    async def _supervise(
        self,
        container_id: str,
        proc: asyncio.subprocess.Process,
        control: ControlSocket,
        client: socket.socket,
        payload: bytes,
        started: float,
    ) -> Outcome:
        handover = asyncio.ensure_future(control.hand_over(client, payload))
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait(
                {handover, exited},
                timeout=self.config.start_timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if handover in done and handover.exception() is None:
                remaining = started + self.config.limits.timeout_seconds - time.monotonic()
                try:
                    await asyncio.wait_for(asyncio.shield(exited), max(remaining, 0))
                    return Outcome.SERVED
                except TimeoutError:
                    await self._kill(container_id, proc)
                    return Outcome.DEADLINE
            if exited in done:
                await self._answer(client, "the function's container exited before taking the connection")
                return Outcome.START_FAILED
            await self._kill(container_id, proc)
            await self._answer(client, "the function's handler did not connect to /control.sock in time")
            return Outcome.START_TIMEOUT
        finally:
            handover.cancel()
            exited.cancel()

    async def _answer(self, client: socket.socket, message: str) -> None:
        """Tell the client the handler could not serve it; a vanished client is no error."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(loop.sock_sendall(client, error_response(502, "Bad Gateway", message)), 1.0)

    async def _kill(self, container_id: str, proc: asyncio.subprocess.Process) -> None:
        """Kill the container and wait for ``runc run`` to exit; force-delete if it will not."""
        with contextlib.suppress(RuncError):
            await self.runc.kill(container_id)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            with contextlib.suppress(RuncError):
                await self.runc.delete(container_id)
