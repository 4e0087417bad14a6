"""How many containers may run at once, and who waits for a slot.

A connection needs a slot before its container starts: one of ``total`` for the machine and
one of ``per_function`` for its function, so one busy function cannot take every slot. Those
that find none wait in one first-come queue of at most ``queue`` connections, for at most
``queue_timeout`` seconds; past either bound they are refused (the caller answers 503).

Warm containers (``faasd.pool``) hold slots too, taken only when free (``try_acquire``); when a
connection has to wait, ``reclaim`` is asked to give one back by stopping an idle warm container.

Apart from the slots, ``Starts`` bounds how many containers *start* at once. A start is CPU
work (runc, then the handler's imports): past what the CPUs can run side by side, more at once
only make each one slower, until all of them pass the start timeout and every one is wasted.
The others wait for their turn, in arrival order, and a start's timeout runs from its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

CONTAINERS_PER_CPU = 16
QUEUE_PER_SLOT = 4
DEFAULT_QUEUE_TIMEOUT = 10.0


def default_total() -> int:
    """Containers the machine runs at once by default: starting one costs CPU, waiting costs little."""
    return CONTAINERS_PER_CPU * (os.cpu_count() or 1)


class Overloaded(Exception):
    """No slot could be had: the queue was full, or the wait ran out."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class AdmissionLimits:
    """The bounds on running and waiting connections (``faasd --max-containers`` ...)."""

    total: int
    per_function: int
    queue: int
    queue_timeout: float

    @classmethod
    def derive(
        cls,
        total: int | None = None,
        per_function: int | None = None,
        queue: int | None = None,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
    ) -> AdmissionLimits:
        """The bounds given, the others derived: from the machine, then from each other."""
        total = total or default_total()
        return cls(
            total=total,
            per_function=min(per_function or total, total),
            queue=QUEUE_PER_SLOT * total if queue is None else queue,
            queue_timeout=queue_timeout,
        )


class Admission:
    """Slots for running containers, granted in arrival order to whoever's function has room."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._running: Counter[str] = Counter()
        self._waiting: deque[tuple[str, asyncio.Future[None]]] = deque()
        # Stops one idle warm container, freeing its slot; False when there is none.
        self.reclaim: Callable[[], bool] = lambda: False

    @property
    def running(self) -> int:
        return self._running.total()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def acquire(self, function: str) -> None:
        """Take a slot for ``function``, waiting in the queue if none is free; may raise ``Overloaded``.

        The caller gives it back with ``release``.
        """
        # Every waiter is one with no room (slots are granted as soon as they free), so
        # taking a slot with room here passes no one who could have had it.
        if self._has_room(function):
            self._running[function] += 1
        else:
            await self._wait(function)

    def try_acquire(self, function: str) -> bool:
        """Take a slot for ``function`` only if one is free and no one waits: a warm start never queues."""
        if self._waiting or not self._has_room(function):
            return False
        self._running[function] += 1
        return True

    def release(self, function: str) -> None:
        """Give back a slot taken by ``try_acquire`` or ``slot``."""
        self._running[function] -= 1
        if not self._running[function]:
            del self._running[function]
        self._grant()

    async def _wait(self, function: str) -> None:
        if len(self._waiting) >= self.limits.queue:
            raise Overloaded("every container slot is busy and the queue is full", self._retry_after())
        granted = asyncio.get_running_loop().create_future()
        entry = (function, granted)
        self._waiting.append(entry)
        self.reclaim()
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.limits.queue_timeout)
        except TimeoutError:
            if not granted.done():
                self._waiting.remove(entry)
                raise Overloaded(
                    f"no container slot came free within {self.limits.queue_timeout:g} s", self._retry_after()
                ) from None
        except BaseException:
            # Cancelled while queued, or just after being granted: give back what we got.
            if granted.done():
                self.release(function)
            else:
                self._waiting.remove(entry)
            raise

    def _grant(self) -> None:
        """Hand free slots to the earliest waiters whose function has room."""
        for entry in list(self._waiting):
            function, granted = entry
            if self.running >= self.limits.total:
                return
            if self._has_room(function):
                self._waiting.remove(entry)
                self._running[function] += 1
                granted.set_result(None)

    def _has_room(self, function: str) -> bool:
        return self.running < self.limits.total and self._running[function] < self.limits.per_function

    def _retry_after(self) -> int:
        """Seconds a refused client should wait: about one queue timeout, at least one."""
        return max(1, round(self.limits.queue_timeout))


class Starts:
    """Turns to start a container: at most ``limit`` at once, the others wait in arrival order.

    The limit follows how long starts take, as a congestion window does: one more after each
    start that took less than ``slow_seconds``, half after one that took longer (once per
    ``slow_seconds``), between ``least`` (the CPUs) and ``most``. A small handler's starts, quick
    and waiting as much as computing, run many at once; a heavy app's, each one CPU-bound, only
    as many as keep each start near ``slow_seconds``: well inside the start timeout, and at the
    rate the CPUs allow.
    """

    def __init__(self, least: int, most: int, slow_seconds: float) -> None:
        self.limit = self._least = least
        self._most = most
        self._slow_seconds = slow_seconds
        self._running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._shrunk_at = -math.inf

    @classmethod
    def for_machine(cls, total: int, start_timeout: float) -> Starts:
        """As many at once as there are CPUs at least, and as slots at most; a start is slow past
        a quarter of the start timeout."""
        return cls(min(os.cpu_count() or 1, total), total, start_timeout / 4)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a turn while the block runs; wait for one first if all are taken."""
        if self._waiting or self._running >= self.limit:
            granted = asyncio.get_running_loop().create_future()
            self._waiting.append(granted)
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self._end(None)  # granted just before the cancel: give it to the next
                elif granted in self._waiting:
                    self._waiting.remove(granted)
                raise
        else:
            self._running += 1
        began = time.monotonic()
        try:
            yield
        finally:
            self._end(time.monotonic() - began)

    def _end(self, took: float | None) -> None:
        self._running -= 1
        now = time.monotonic()
        if took is not None and took < self._slow_seconds:
            self.limit = min(self._most, self.limit + 1)
        elif took is not None and now - self._shrunk_at >= self._slow_seconds:
            self.limit = max(self._least, self.limit // 2)
            self._shrunk_at = now
        while self._waiting and self._running < self.limit:
            granted = self._waiting.popleft()
            if not granted.done():  # one cancelled a moment ago takes no turn
                self._running += 1
                granted.set_result(None)
