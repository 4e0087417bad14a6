"""Warm containers of one version: started ahead of demand, each given to one connection.

A connection that finds a ready container skips the container's start: the handler already
waits on its ``/control.sock``. Every container still serves one connection (or its version's
``reuse`` count) and then exits, so the pool only moves the start off the client's path.

How many are kept follows the recent arrival rate: by Little's law, arrivals per second times
the seconds a start takes is how many must be starting at any moment to keep up, plus one ready
for the next arrival; at most the version's ``warm`` cap. Under ``reuse`` a container comes back
after each connection, so only the arrivals it cannot absorb ask for new ones. After ``idle_seconds`` without an
arrival the pool empties, and the next connection takes the cold path. A container that dies
while it waits is reaped. Each one holds an admission slot, taken only when free; a connection
that has to wait for a slot takes the first container of its pool to get ready instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from faasd.admission import Admission
from faasd.instance import Instance
from faasd.registry import Version

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 5.0
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


class WarmPool:
    """Ready containers of ``version``, made by ``new_instance``, with slots from ``admission``."""

    def __init__(
        self,
        version: Version,
        new_instance: Callable[[], Instance],
        admission: Admission,
        idle_seconds: float,
    ) -> None:
        self.version = version
        self.new_instance = new_instance
        self._admission = admission
        self._idle_seconds = idle_seconds
        self._ready: deque[Instance] = deque()
        self._starting = 0
        self._arrivals: deque[float] = deque()
        self._last_arrival = 0.0
        self._start_seconds = START_SECONDS_GUESS
        self._failures = 0
        self._paused_until = 0.0
        self._work: set[asyncio.Task[None]] = set()  # starts and watches: cancelled on close
        self._stops: set[asyncio.Task[None]] = set()  # never cancelled: a container must not outlive us
        self._idle_check: asyncio.TimerHandle | None = None
        self._claims: deque[asyncio.Future[Instance]] = deque()  # connections waiting for a slot
        self._closed = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    async def claim(self) -> tuple[Instance, bool]:
        """A container for a new connection, its slot with it, and whether it was ready; may
        raise ``Overloaded``.

        A ready container goes first. Without one the connection takes a slot and a container
        not yet started; when it must wait for the slot, a container that gets ready for this
        pool meanwhile (one coming back under reuse, or a warm start) is taken instead of
        starting another. The caller calls ``refill`` once the connection has its container: a
        cold one's slot comes before any warm start's.
        """
        instance = self._take_ready()
        if instance is not None:
            return instance, True
        if self._admission.try_acquire(self.version.function):
            return self.new_instance(), False
        offered: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._claims.append(offered)
        slot = asyncio.ensure_future(self._admission.acquire(self.version.function))
        either: set[asyncio.Future[Any]] = {offered, slot}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: keep neither
            self._withdraw(offered)
            self._give_up(slot)
            raise
        if offered.done():
            self._give_up(slot)
            return offered.result(), True
        self._withdraw(offered)
        slot.result()  # raises Overloaded
        return self.new_instance(), False

    def _take_ready(self) -> Instance | None:
        """A ready container for a new connection, its slot with it; ``None`` when there is none."""
        now = self._last_arrival = time.monotonic()
        self._arrivals.append(now)
        self._schedule_idle_check()
        instance = None
        while self._ready and instance is None:
            candidate = self._ready.popleft()
            if candidate.ready:
                instance = candidate
            else:  # died since its last check: its watcher has not run yet
                self._discard(candidate)
        return instance

    def give_back(self, instance: Instance) -> None:
        """Keep ``instance`` (slot and all), ready for another connection under ``reuse``.

        It goes first in line, ahead of never-used ones, and is kept even with ``warm`` 0:
        reuse is asked for on its own.
        """
        if self._closed or not instance.ready:
            self._discard(instance)
        elif not self._hand_to_claim(instance):
            if self._admission.queued:
                self._discard(instance)  # another function's waiting connection needs its slot more
            else:
                self._ready.appendleft(instance)  # the watcher from its start still watches it

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
        while self._work or self._stops:
            await asyncio.wait(self._work | self._stops)

    def _target(self, now: float) -> int:
        if now - self._last_arrival >= self._idle_seconds:
            return 0
        while self._arrivals and self._arrivals[0] < now - RATE_WINDOW_SECONDS:
            self._arrivals.popleft()
        rate = len(self._arrivals) / RATE_WINDOW_SECONDS
        limits = self.version.limits
        return warm_target(rate, self._start_seconds, limits.warm, limits.reuse)

    def refill(self) -> None:
        """Start containers until as many are ready or starting as the arrival rate asks for."""
        now = time.monotonic()
        target = self._target(now)
        while not self._closed and now >= self._paused_until and len(self._ready) + self._starting < target:
            if not self._admission.try_acquire(self.version.function):
                return
            self._starting += 1
            self._spawn(self._work, self._start_one())

    async def _start_one(self) -> None:
        instance = self.new_instance()
        began = time.monotonic()
        try:
            failure = await instance.start()
        except BaseException:
            self._discard(instance)
            raise
        finally:
            self._starting -= 1
        if failure is not None:
            self._failures += 1
            backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2**self._failures)
            self._paused_until = time.monotonic() + backoff
            log.warning(
                "warm start failed function=%s version=%s outcome=%s backoff_s=%.1f",
                self.version.function,
                self.version.number,
                failure.value,
                backoff,
            )
            instance.record(version=self.version.number, outcome=failure.value, exit=instance.exit_code, warm=True)
            self._discard(instance)
            return
        self._failures = 0
        took = time.monotonic() - began
        self._start_seconds += START_SECONDS_WEIGHT * (took - self._start_seconds)
        if self._closed:
            self._discard(instance)
            return
        if not self._hand_to_claim(instance):
            if self._admission.queued or len(self._ready) >= self._target(time.monotonic()):
                self._discard(instance)  # its slot is wanted by another function's connection, or it is not
                return
            self._ready.append(instance)
            self._schedule_idle_check()  # one that ran while this started must not leave it behind
        await self._watch(instance)

    async def _watch(self, instance: Instance) -> None:
        """Reap ``instance`` if it dies while it waits in the pool (taken, given back or not)."""
        await instance.wait_exit()
        if instance in self._ready:
            self._ready.remove(instance)
            log.warning(
                "warm container died function=%s id=%s exit=%s", self.version.function, instance.id, instance.exit_code
            )
            instance.record(version=self.version.number, outcome="died_waiting", exit=instance.exit_code, warm=True)
            self._discard(instance)

    def _hand_to_claim(self, instance: Instance) -> bool:
        """Give ready ``instance`` to the connection that has waited longest; False if none waits."""
        while self._claims:
            offered = self._claims.popleft()
            if not offered.done():
                offered.set_result(instance)
                return True
        return False

    def _withdraw(self, offered: asyncio.Future[Instance]) -> None:
        """Stop waiting for a container; one handed over all the same goes back to the pool."""
        if offered.done():
            self.give_back(offered.result())
        else:
            self._claims.remove(offered)
            offered.cancel()

    def _give_up(self, slot: asyncio.Future[None]) -> None:
        """Let go of a slot asked for and not needed, whether or not it was granted."""
        if not slot.done():
            slot.cancel()  # acquire gives back a slot granted meanwhile
        elif not slot.cancelled() and slot.exception() is None:
            self._admission.release(self.version.function)

    def _discard(self, instance: Instance) -> None:
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
