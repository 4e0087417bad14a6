"""One connection's life: a container for it, the handoff, the deadline, the accounting.

The daemon touches the client's bytes only when the handler could not: if the container
dies or never connects to ``/control.sock``, or is done without writing a byte, the client
gets a 502; if the deadline comes before the handler wrote anything, a 504.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from faasd import metrics
from faasd.admission import Starts
from faasd.config import Config
from faasd.daemonlog import Throttle
from faasd.errors import NotATemplate
from faasd.handoff import close_client
from faasd.images.store import ImageStore
from faasd.instance import KILL_GRACE_SECONDS, Instance, Outcome, Sandbox
from faasd.logs import FunctionLog
from faasd.registry import Version
from faasd.replies import send_error
from faasd.sandbox.bpf import compile_profile
from faasd.sandbox.fork import ForkConnection, Templates
from faasd.sandbox.runc import Runc
from faasd.sandbox.seccomp import fork_child_profile, template_profile
from faasd.sandbox.spec import SpecTemplate, build_spec
from faasd.sandbox.template import Template, setup_message, template_version

log = logging.getLogger(__name__)
FAILED_CONNECTIONS = Throttle(log)

# What the client is told when the handler could not answer it.
REPLIES = {
    Outcome.START_FAILED: (HTTPStatus.BAD_GATEWAY, "the function's container exited before taking the connection"),
    Outcome.START_TIMEOUT: (HTTPStatus.BAD_GATEWAY, "the function's handler did not connect to /control.sock in time"),
    Outcome.HUNG_UP: (HTTPStatus.BAD_GATEWAY, "the function's handler hung up before taking the connection"),
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


@functools.cache
def child_filter() -> bytes:
    """The seccomp filter (BPF) each fork-mode child installs: compiled once, the same for all."""
    return compile_profile(fork_child_profile())


@dataclass(frozen=True)
class Dispatcher:
    """Serves connections of any function: everything one container needs, held once."""

    config: Config
    runc: Runc
    store: ImageStore
    starts: Starts

    @property
    def start_bound(self) -> float:
        """The longest one container's start may take, from asking for it to its handler waiting:
        a wait for its turn about as long as one for a slot, then the start itself."""
        return self.config.admission.queue_timeout + self.config.start_timeout_seconds + KILL_GRACE_SECONDS

    @property
    def fork_start_bound(self) -> float:
        """The longest a fork-mode child's start may take: its template's start and readiness,
        a fork asked of it, and once more of a new one if that one hung."""
        return 4 * self.config.start_timeout_seconds + 2 * KILL_GRACE_SECONDS

    def template(self, version: Version, seccomp: dict[str, Any] | None = None) -> SpecTemplate:
        """The ``config.json`` every container of ``version`` shares, but for its id (with the
        ``seccomp`` filter given, or the default one)."""
        spec = build_spec(
            version.config,
            version.uid,
            version.gid,
            version.limits,
            self.store.rootfs(version.function, version.number),
            version.function,
            self.config.userns_base,
            seccomp=seccomp,
        )
        return SpecTemplate.of(spec)

    def instance(self, version: Version, template: SpecTemplate, function_log: FunctionLog) -> Instance:
        """A container of ``version``, not yet started."""
        return Instance(self.config, self.runc, self.starts, version, template, function_log)

    def fork_spec(self, version: Version) -> SpecTemplate:
        """The ``config.json`` of ``version``'s templates (fork mode): its own but for the user
        (never root) and the seccomp filter (``template_profile``)."""
        return self.template(template_version(version), template_profile())

    def fork_template(self, version: Version, template: SpecTemplate, function_log: FunctionLog) -> Template:
        """A template container of ``version``, from its ``fork_spec``, not yet started."""
        instance = self.instance(template_version(version), template, function_log)
        setup = setup_message(version.limits, child_filter())
        return Template(instance, setup, self.config.start_timeout_seconds)

    async def check_template(self, version: Version, function_log: FunctionLog) -> None:
        """Start a template of ``version`` and stop it; ``NotATemplate`` unless it became one."""
        template = self.fork_template(version, self.fork_spec(version), function_log)
        try:
            failure = await template.start()
        finally:
            await template.stop()
        if failure is not None:
            reason = template.refusal or f"its container did not start ({failure.value}, see faas logs)"
            raise NotATemplate(f"{version.function!r} cannot run with --sandbox fork: {reason}")

    def fork_connection(self, templates: Templates, function_log: FunctionLog) -> ForkConnection:
        """A child of the version's template, not yet forked."""
        return ForkConnection(self.config, templates, function_log)

    async def serve(self, instance: Sandbox, client: socket.socket, peer: tuple[str, int], prefix: str = "") -> bool:
        """Serve ``client`` on ``instance``, started here unless its pool started it; ``prefix`` is
        the path the gateway routed it by, for the handoff metadata.

        True when the container is ready for another connection (``reuse``); otherwise it has
        been stopped and its bundle removed.
        """
        version = instance.version
        began = time.monotonic()
        kept = False
        settled = False  # the handler is gone (exited, killed) or never had the client
        try:
            outcome = instance.start_failure if instance.started else await instance.start()
            if outcome is None:
                outcome = await instance.serve(client, peer, prefix)
            if outcome in REPLIES:
                status, message = REPLIES[outcome]
                # The id its lines carry in the function's log, where the reason is.
                hint = f"{message}: see `faas logs {version.function}` (request {instance.id})"
                await send_error(client, status, hint, request_id=instance.id)
            kept = instance.ready
            settled = not kept
        finally:
            if settled:
                close_client(client)
                await instance.stop()
            elif kept:
                # Its handler may hold the socket too and set SO_LINGER again between our
                # setsockopt and close: this close may wait, so it waits off the loop.
                await asyncio.to_thread(close_client, client)
            else:  # failed while its handler held the client: end it first, then nothing else does
                try:
                    await instance.stop()
                finally:
                    close_client(client)
        duration_ms = round((time.monotonic() - began) * 1000, 1)
        count(version.function, outcome, duration_ms / 1000)
        instance.record(version=version.number, outcome=outcome.value, exit=instance.exit_code, duration_ms=duration_ms)
        # Every connection is in its function's log; the daemon's own log keeps the ones that failed,
        # at the throttle's rate: any client can make a broken function fail again and again.
        emit = log.log if outcome is Outcome.SERVED else FAILED_CONNECTIONS.log
        emit(
            logging.DEBUG if outcome is Outcome.SERVED else logging.INFO,
            "connection function=%s version=%s id=%s peer=%s:%s outcome=%s exit=%s duration_ms=%.1f",
            version.function,
            version.number,
            instance.id,
            peer[0],
            peer[1],
            outcome.value,
            instance.exit_code,
            duration_ms,
        )
        return kept
