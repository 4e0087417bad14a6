"""One connection's life: a fresh container, the handoff, the deadline, the clean-up.

The daemon touches the client's bytes only when the handler could not: if the container
dies or never connects to ``/control.sock``, or exits without writing a byte, the client
gets a 502; if the deadline comes before the handler wrote anything, a 504. Whether it
wrote is read from the socket's own counters (``tcpinfo``), never guessed.
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
from http import HTTPStatus

from faasd import metrics
from faasd.config import Config
from faasd.errors import RuncError, RuntimeFailure
from faasd.handoff import ControlSocket, encode_metadata
from faasd.images.store import ImageStore
from faasd.logs import FunctionLog
from faasd.registry import Version
from faasd.replies import send_error
from faasd.sandbox.runc import Runc
from faasd.sandbox.spec import Container, build_spec
from faasd.tcpinfo import bytes_written

log = logging.getLogger(__name__)

# How long runc may take to exit after its container was killed before we stop waiting.
KILL_GRACE_SECONDS = 5.0


class Outcome(Enum):
    """How a connection ended, from the daemon's point of view."""

    SERVED = "served"  # the handler answered and exited on its own
    START_FAILED = "start_failed"  # the container exited before taking the connection
    START_TIMEOUT = "start_timeout"  # the handler never connected to /control.sock
    NO_ANSWER = "no_answer"  # the handler took the connection and exited without writing a byte
    DEADLINE = "deadline"  # killed at the deadline, after it had started answering
    DEADLINE_SILENT = "deadline_silent"  # killed at the deadline without having written a byte


# What the client is told when the handler could not answer it.
REPLIES = {
    Outcome.START_FAILED: (HTTPStatus.BAD_GATEWAY, "the function's container exited before taking the connection"),
    Outcome.START_TIMEOUT: (HTTPStatus.BAD_GATEWAY, "the function's handler did not connect to /control.sock in time"),
    Outcome.NO_ANSWER: (HTTPStatus.BAD_GATEWAY, "the function's handler exited without answering"),
    Outcome.DEADLINE_SILENT: (HTTPStatus.GATEWAY_TIMEOUT, "the function did not answer before its deadline"),
}


def count(function: str, outcome: Outcome, seconds: float) -> None:
    """Record a finished connection in the metrics, by the status its client saw."""
    reply = REPLIES.get(outcome)
    metrics.REQUESTS.labels(function, str(reply[0].value) if reply else "handler").inc()
    metrics.REQUEST_DURATION.labels(function).observe(seconds)
    if outcome is not Outcome.SERVED:
        metrics.ERRORS.labels(outcome.value).inc()


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
        limits = version.limits
        started = time.monotonic()
        proc: asyncio.subprocess.Process | None = None
        capture = function_log.capture(request_id)
        bundle.mkdir(mode=0o711)  # the container's root (an unprivileged host uid) binds the control socket
        base = self.config.userns_base
        control = ControlSocket(bundle / "control.sock", owner=(base + version.uid, base + version.gid))
        try:
            container = Container(
                id=container_id,
                rootfs=self.store.rootfs(version.function, version.number),
                control_socket=control.path,
                hostname=version.function,
            )
            spec = build_spec(version.config, version.uid, version.gid, limits, container, base)
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
                outcome = Outcome.START_FAILED
            else:
                outcome = await self._supervise(version, container_id, proc, control, client, payload, started)
            if outcome in REPLIES:
                await send_error(client, *REPLIES[outcome])
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
        count(version.function, outcome, duration_ms / 1000)
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
        version: Version,
        container_id: str,
        proc: asyncio.subprocess.Process,
        control: ControlSocket,
        client: socket.socket,
        payload: bytes,
        started: float,
    ) -> Outcome:
        """Hand ``client`` over and wait for the container to end; say how it ended."""
        handover = asyncio.ensure_future(control.hand_over(client, payload))
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait(
                {handover, exited},
                timeout=self.config.start_timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if handover in done and handover.exception() is None:
                metrics.CONTAINER_START.labels(version.function).observe(time.monotonic() - started)
                remaining = started + version.limits.timeout_seconds - time.monotonic()
                try:
                    await asyncio.wait_for(asyncio.shield(exited), max(remaining, 0))
                except TimeoutError:
                    await self._kill(container_id, proc)
                    return Outcome.DEADLINE if bytes_written(client) != 0 else Outcome.DEADLINE_SILENT
                return Outcome.SERVED if bytes_written(client) != 0 else Outcome.NO_ANSWER
            if exited in done:
                return Outcome.START_FAILED
            await self._kill(container_id, proc)
            return Outcome.START_TIMEOUT
        finally:
            handover.cancel()
            exited.cancel()

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
