"""Warm containers of one version: started ahead of demand, each given to one connection.

A connection that finds a ready container skips the container's start: the handler already
waits on its ``/control.sock``. Every container still serves one connection (or its version's
``reuse`` count) and then exits, so the pool only moves the start off the client's path.

How many are kept follows the recent arrival rate: by Little's law, arrivals per second times
the seconds a start takes is how many must be starting at any moment to keep up, plus one ready
for the next arrival; at most the version's ``warm`` cap. The rate is measured over the last
``RATE_WINDOW_SECONDS``, or over the time since arrivals resumed if that is shorter: a burst
after a quiet spell counts at its own rate from its first second, not diluted by the quiet.
Under ``reuse`` a container comes back after each connection, so only the arrivals it cannot
absorb ask for new ones. After ``idle_seconds`` without an arrival the pool empties, and the
next connection takes the cold path. A container that dies while it waits is reaped. Each one
holds an admission slot, taken only when free.

A connection that finds no ready container waits in line and, once it has a slot, asks for one
start of its own (the cold path); it takes the first container of its pool to get ready, which
need not be that one: a warm start, one coming back under reuse. No connection then waits on a
slow start while another container is ready, and the start it asked for serves the next in line:
a connection that finds such a start under way, not yet counted on by another, asks for none.
Under reuse it first waits, as long as a start takes, for a container serving another connection
to come back: a start per momentarily empty pool would cost more CPU than the reuse saves.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from faasd.admission import Admission, Overloaded
from faasd.instance import Outcome, Sandbox
from faasd.registry import Version

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 5.0
MIN_RATE_SPAN_SECONDS = 1.0  # a few arrivals close together are not yet a rate
START_SECONDS_GUESS = 0.05  # until the first start is measured
START_SECONDS_WEIGHT = 0.2  # of the newest start, in the moving average
MAX_BACKOFF_SECONDS = 30.0  # between warm starts of a version whose containers fail to start


def warm_target(arrivals_per_second: float, start_seconds: float, cap: int, reuse: int = 1) -> int:
    """Containers to keep started or starting for this arrival rate; 0 when nothing arrives.

    Under ``reuse`` each container takes that many arrivals, coming back between them, so only
    one arrival in ``reuse`` needs a new one.
    """
    if cap <= 0 or arrivals_per_second <= 0:
        return 0
    return min(cap, math.ceil(arrivals_per_second / reuse * start_seconds) + 1)


def arrival_rate(arrivals: Sequence[float], now: float) -> float:
    """Arrivals per second, given the times of those within the last ``RATE_WINDOW_SECONDS``
    (oldest first): over the window, or over the time since the oldest when that is shorter,
    but at least ``MIN_RATE_SPAN_SECONDS``.

    Counted over the whole window, a burst that began a second ago after a quiet spell would
    read as a fifth of its rate for its first seconds, and the pool would start too few.
    """
    if not arrivals:
        return 0.0
    span = min(RATE_WINDOW_SECONDS, max(MIN_RATE_SPAN_SECONDS, now - arrivals[0]))
    return len(arrivals) / span


def _new_future() -> asyncio.Future[tuple[Sandbox, bool]]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class Claim:
    """A connection waiting for a container of the pool."""

    # The container, and whether it was ready before (warm, or back under reuse) or started for a connection.
    offered: asyncio.Future[tuple[Sandbox, bool]] = field(default_factory=_new_future)
    covered: bool = False  # a start asked for by a connection is counted on for it
    expects_return: bool = False  # it waits a while for a container serving another to come back


class WarmPool:
    """Ready containers of ``version``, made by ``new_instance``, with slots from ``admission``."""

    def __init__(
        self,
        version: Version,
        new_instance: Callable[[], Sandbox],
        admission: Admission,
        idle_seconds: float,
        start_bound: float,
    ) -> None:
        """``start_bound``: the longest one start may take, its wait for a turn included."""
        self.version = version
        self.new_instance = new_instance
        self._admission = admission
        self._idle_seconds = idle_seconds
        self._start_bound = start_bound
        self._ready: deque[Sandbox] = deque()
        self._lent: set[Sandbox] = set()  # serving a connection, to come back under reuse
        self._starting = 0
        self._starting_for_claims = 0
        self._arrivals: deque[float] = deque()
        self._last_arrival = 0.0
        self._start_seconds = START_SECONDS_GUESS
        self._failures = 0
        self._paused_until = 0.0
        self._work: set[asyncio.Task[None]] = set()  # warm starts and watches: cancelled on close
        self._claimed_starts: set[asyncio.Task[None]] = set()  # a waiting connection's: awaited on close
        self._stops: set[asyncio.Task[None]] = set()  # never cancelled: a container must not outlive us
        self._idle_check: asyncio.TimerHandle | None = None
        self._claims: deque[Claim] = deque()  # connections waiting for a container, oldest first
        self._closed = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    async def claim(self) -> tuple[Sandbox, bool]:
        """A container for a new connection, its slot with it, and whether it was ready before the
        connection needed it (a warm one, or one back under reuse); may raise ``Overloaded``.

        A ready container goes first. Without one the connection waits in line for the first to
        get ready: under reuse, for as long as a start takes, one serving another connection to
        come back; then counting on a start another connection asked for and no longer needs, or
        else asking for a start of its own once it has a slot. What it gets may be a
        container whose start failed (``Instance.start_failure``): the caller answers for that.
        Once the pool is closed the container comes not yet started, for the caller to start,
        so that no start outlives ``close``. The caller calls ``refill`` once the connection has
        its container.
        """
        instance, ready = await self._claim()
        if instance.ready and instance.served + 1 < self.version.limits.reuse:
            self._lent.add(instance)
        return instance, ready

    async def _claim(self) -> tuple[Sandbox, bool]:
        instance = self._take_ready()
        if instance is not None:
            return instance, True
        claim = Claim()
        self._claims.append(claim)
        try:
            if len(self._lent) > sum(c.expects_return for c in self._claims):
                # Under reuse one of those is likely back sooner than a new one would start.
                claim.expects_return = True
                await asyncio.wait({claim.offered}, timeout=self._start_seconds)
                claim.expects_return = False
                if claim.offered.done():
                    return claim.offered.result()
            if self._starting_for_claims > self._covered():
                claim.covered = True
            elif self._admission.try_acquire(self.version.function) or await self._slot_unless_offered(claim):
                if self._closed:
                    self._withdraw(claim)
                    return self.new_instance(), False
                claim.covered = True
                self._start(for_claim=True)
            return await self._offered(claim)
        except BaseException:  # refused or cancelled: it takes nothing
            self._withdraw(claim)
            raise

    async def _offered(self, claim: Claim) -> tuple[Sandbox, bool]:
        """The container offered to ``claim``, which counts on a start under way: within the
        time one start may take, or ``Overloaded``."""
        try:
            return await asyncio.wait_for(claim.offered, self._start_bound)
        except TimeoutError:
            raise Overloaded(f"no container got ready within {self._start_bound:g} s", retry_after=1) from None

    async def _slot_unless_offered(self, claim: Claim) -> bool:
        """Wait for a slot; False if a container was offered to ``claim`` first. May raise
        ``Overloaded``."""
        slot = asyncio.ensure_future(self._admission.acquire(self.version.function))
        either: set[asyncio.Future[Any]] = {claim.offered, slot}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._give_up(slot)
            raise
        if claim.offered.done():
            self._give_up(slot)
            return False
        slot.result()  # raises Overloaded
        return True

    def _take_ready(self) -> Sandbox | None:
        """A ready container for a new connection, its slot with it; ``None`` when there is none."""
        now = self._last_arrival = time.monotonic()
        self._arrivals.append(now)
        self._schedule_idle_check()
        instance = None
        while self._ready and instance is None:
            candidate = self._ready.popleft()
            if candidate.ready:
                instance = candidate
            else:  # hung up /control.sock, or died and its watcher has not run yet
                log.warning("warm container gone function=%s id=%s", self.version.function, candidate.id)
                candidate.record(
                    version=self.version.number, outcome=Outcome.HUNG_UP.value, exit=candidate.exit_code, warm=True
                )
                self._discard(candidate)
        return instance

    def give_back(self, instance: Sandbox) -> None:
        """Keep ``instance`` (slot and all), ready for another connection under ``reuse``.

        It goes first in line, ahead of never-used ones, and is kept even with ``warm`` 0:
        reuse is asked for on its own.
        """
        self._lent.discard(instance)
        claim = self._oldest_claim() if instance.ready else None
        if claim is not None:
            self._hand_over(claim, instance, ready=True)
        else:
            self._keep_or_discard(instance, first=True)

    def shed(self) -> bool:
        """Stop one ready container to free its slot for a waiting connection."""
        if not self._ready:
            return False
        self._discard(self._ready.pop())
        return True

    async def close(self) -> None:
        """Stop every warm container, ready or starting (redeploy, rm, shutdown)."""
        self._closed = True
        if self._idle_check is not None:
            self._idle_check.cancel()
        while self._ready:
            self._discard(self._ready.popleft())
        for task in list(self._work):
            task.cancel()
        while self._work or self._claimed_starts or self._stops:
            await asyncio.wait(self._work | self._claimed_starts | self._stops)

    def _target(self, now: float) -> int:
        if now - self._last_arrival >= self._idle_seconds:
            return 0
        while self._arrivals and self._arrivals[0] < now - RATE_WINDOW_SECONDS:
            self._arrivals.popleft()
        rate = arrival_rate(self._arrivals, now)
        limits = self.version.limits
        return warm_target(rate, self._start_seconds, limits.warm, limits.reuse)

    def refill(self) -> None:
        """Start containers until as many are ready, starting, or (under reuse) serving a
        connection to come back, as the arrival rate asks for."""
        now = time.monotonic()
        target = self._target(now)
        while not self._closed and now >= self._paused_until and self._started_or_starting() < target:
            if not self._admission.try_acquire(self.version.function):
                return
            self._start(for_claim=False)

    def _started_or_starting(self) -> int:
        return len(self._ready) + self._starting + len(self._lent)

    def _start(self, *, for_claim: bool) -> None:
        """Start a container, its slot already taken: for a waiting connection, or a warm one."""
        self._starting += 1
        self._starting_for_claims += for_claim
        self._spawn(self._claimed_starts if for_claim else self._work, self._start_one(for_claim))

    async def _start_one(self, for_claim: bool) -> None:
        began = time.monotonic()
        try:
            instance = self.new_instance()
        except Exception as exc:  # out of fds for its pipes, say: the start never began
            self._start_ended(for_claim)
            self._admission.release(self.version.function)
            self._not_begun(exc, for_claim)
            return
        try:
            failure = await instance.start()
        except BaseException:
            self._discard(instance)
            raise
        finally:
            self._start_ended(for_claim)
        if failure is not None:
            self._start_failed(instance, failure, for_claim)
            return
        self._failures = 0
        took = time.monotonic() - began
        self._start_seconds += START_SECONDS_WEIGHT * (took - self._start_seconds)
        if not self._closed:
            self._spawn(self._work, self._watch(instance))
        # A start asked for by a connection goes to one counting on such a start, so each has one coming.
        claim = (for_claim and self._oldest_claim(covered=True)) or self._oldest_claim()
        if claim is not None:
            self._hand_over(claim, instance, ready=not for_claim)
        else:
            self._keep_or_discard(instance, first=False)

    def _start_ended(self, for_claim: bool) -> None:
        self._starting -= 1
        self._starting_for_claims -= for_claim

    def _start_failed(self, instance: Sandbox, failure: Outcome, for_claim: bool) -> None:
        """Back off from warm starts; a connection left with no start coming gets the failure."""
        backoff = self._back_off()
        log.warning(
            "start failed function=%s version=%s outcome=%s backoff_s=%.1f",
            self.version.function,
            self.version.number,
            failure.value,
            backoff,
        )
        claim = self._oldest_claim(covered=True)
        if for_claim and claim is not None and self._covered() > self._starting_for_claims:
            self._hand_over(claim, instance, ready=False)  # its connection answers for it
            return
        instance.record(version=self.version.number, outcome=failure.value, exit=instance.exit_code, warm=not for_claim)
        self._discard(instance)

    def _back_off(self) -> float:
        """Pause warm starts after a failed one, longer after each in a row; the pause, in seconds."""
        self._failures += 1
        backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2**self._failures)
        self._paused_until = time.monotonic() + backoff
        return backoff

    def _not_begun(self, error: Exception, for_claim: bool) -> None:
        """A start that failed before its container began: back off from warm starts, and refuse
        a connection left with no start coming for it."""
        self._back_off()
        log.error(
            "container not started function=%s version=%s error=%s", self.version.function, self.version.number, error
        )
        claim = self._oldest_claim(covered=True)
        if for_claim and claim is not None and self._covered() > self._starting_for_claims:
            self._claims.remove(claim)
            claim.offered.set_exception(Overloaded(f"no container could be started: {error}", retry_after=1))

    def _keep_or_discard(self, instance: Sandbox, *, first: bool) -> None:
        """Keep a ready container no connection waits for, ``first`` in line or last; or stop it
        when the pool is closed, another function's connection wants its slot, or (a new one)
        enough are ready already."""
        if (
            self._closed
            or not instance.ready
            or self._admission.queued
            or (not first and len(self._ready) >= self._target(time.monotonic()))
        ):
            self._discard(instance)
        elif first:
            self._ready.appendleft(instance)
        else:
            self._ready.append(instance)
            self._schedule_idle_check()  # one that ran while this started must not leave it behind

    async def _watch(self, instance: Sandbox) -> None:
        """Reap ``instance`` if it dies while it waits in the pool (taken, given back or not)."""
        await instance.wait_exit()
        self._lent.discard(instance)
        if instance in self._ready:
            self._ready.remove(instance)
            log.warning(
                "warm container died function=%s id=%s exit=%s", self.version.function, instance.id, instance.exit_code
            )
            instance.record(
                version=self.version.number, outcome=Outcome.DIED_WAITING.value, exit=instance.exit_code, warm=True
            )
            self._discard(instance)

    def _oldest_claim(self, *, covered: bool = False) -> Claim | None:
        """The connection that has waited longest (of those counting on a start, if ``covered``);
        ``None`` if none waits. One cancelled a moment ago is not counted."""
        waiting = (claim for claim in self._claims if not claim.offered.done())
        return next((claim for claim in waiting if claim.covered or not covered), None)

    def _covered(self) -> int:
        """Waiting connections counting on a start asked for by a connection: never more than
        there are such starts under way."""
        return sum(claim.covered and not claim.offered.done() for claim in self._claims)

    def _hand_over(self, claim: Claim, instance: Sandbox, *, ready: bool) -> None:
        self._claims.remove(claim)
        claim.offered.set_result((instance, ready))

    def _withdraw(self, claim: Claim) -> None:
        """Stop waiting for a container; one handed over all the same goes back to the pool."""
        if claim in self._claims:  # its future is cancelled already if its connection was
            self._claims.remove(claim)
        if claim.offered.done() and not claim.offered.cancelled() and claim.offered.exception() is None:
            self.give_back(claim.offered.result()[0])
        claim.offered.cancel()

    def _give_up(self, slot: asyncio.Future[None]) -> None:
        """Let go of a slot asked for and not needed, whether or not it was granted."""
        if not slot.done():
            slot.cancel()  # acquire gives back a slot granted meanwhile
        elif not slot.cancelled() and slot.exception() is None:
            self._admission.release(self.version.function)

    def _discard(self, instance: Sandbox) -> None:
        """Give back ``instance``'s slot now and end the container in the background."""
        self._admission.release(self.version.function)
        self._spawn(self._stops, instance.stop())

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _schedule_idle_check(self) -> None:
        if self._idle_check is None and not self._closed:
            self._idle_check = asyncio.get_running_loop().call_later(self._idle_seconds, self._on_idle_check)

    def _on_idle_check(self) -> None:
        """Empty the pool if nothing arrived for ``idle_seconds``; else look again later."""
        self._idle_check = None
        quiet = time.monotonic() - self._last_arrival
        if quiet >= self._idle_seconds:
            if self._ready:
                log.info("warm pool emptied function=%s idle_s=%.0f", self.version.function, quiet)
            while self._ready:
                self._discard(self._ready.popleft())
            return
        loop = asyncio.get_running_loop()
        self._idle_check = loop.call_later(self._idle_seconds - quiet, self._on_idle_check)
