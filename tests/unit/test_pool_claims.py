"""Which waiting connection a pool's containers go to, in what order, and what becomes of the rest.

These are the pool's own decisions, so each start here ends when its test says: the containers
are stand-ins whose start the test finishes. Real containers take the same paths in
tests/integration/test_pool.py.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import Callable

import pytest

from faasd.admission import Admission, AdmissionLimits, Overloaded
from faasd.images.archive import ImageConfig
from faasd.instance import Instance, Outcome
from faasd.limits import Limits
from faasd.pool import START_SECONDS_GUESS, WarmPool
from faasd.registry import Version

IDS = itertools.count()


class Container:
    """A container whose start ends when its test calls ``ready_now`` or ``fail_now``."""

    def __init__(self, version: Version) -> None:
        self.version = version
        self.id = f"c{next(IDS)}"
        self.started = False
        self.served = 0
        self.start_failure: Outcome | None = None
        self.stopped = False
        self.exit_code: int | None = None
        self._start_ends: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def ready_now(self) -> None:
        self._start_ends.set_result(None)

    def fail_now(self) -> None:
        self.exit_code = 1
        self._start_ends.set_result(Outcome.START_FAILED)

    @property
    def ready(self) -> bool:
        return self._start_ends.done() and self.start_failure is None and not self.stopped

    async def start(self) -> Outcome | None:
        self.started = True
        self.start_failure = await self._start_ends
        return self.start_failure

    async def stop(self) -> None:
        self.stopped = True
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait_exit(self) -> None:
        await asyncio.shield(self._exited)

    def record(self, **fields: object) -> None:
        pass


def a_version(warm: int, reuse: int = 1) -> Version:
    config = ImageConfig(entrypoint=(), cmd=("true",), env=(), working_dir="/", user="")
    return Version("f", 1, "image", "sha256:0", config, 0, 0, 0.0, Limits(warm=warm, reuse=reuse))


def a_pool(
    warm: int = 0, reuse: int = 1, slots: int = 8, start_bound: float = 60, fails: int = 0
) -> tuple[WarmPool, list[Container], Admission]:
    """A pool whose containers are the stand-ins in the list it returns, in the order made; its
    first ``fails`` containers cannot be made (no fds left for their pipes)."""
    version = a_version(warm, reuse)
    made: list[Container] = []
    failures = itertools.count()

    def new_container() -> Container:
        if next(failures) < fails:
            raise OSError(errno.EMFILE, "Too many open files")
        made.append(Container(version))
        return made[-1]

    admission = Admission(AdmissionLimits.derive(total=slots))
    new_instance: Callable[[], Container] = new_container
    pool = WarmPool(version, new_instance, admission, idle_seconds=60, start_bound=start_bound)  # type: ignore[arg-type]
    return pool, made, admission


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def in_line(pool: WarmPool) -> asyncio.Task[tuple[Instance, bool]]:
    """A connection asking ``pool`` for a container, once it has asked."""
    task = asyncio.create_task(pool.claim())
    await settle()
    return task


async def given_up(pool: WarmPool) -> None:
    """A connection that asked ``pool`` for a container, then went away."""
    task = await in_line(pool)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_connection_takes_the_first_container_to_get_ready_and_its_own_start_serves_the_next() -> None:
    pool, made, _ = a_pool()
    first = await in_line(pool)
    second = await in_line(pool)
    assert [c.started for c in made] == [True, True], "each connection asked for a start of its own"
    made[1].ready_now()  # the second connection's start ends first...
    await settle()
    assert first.done() and first.result() == (made[1], False), "...and goes to the one that waited longest"
    assert not second.done()
    made[0].ready_now()
    assert await second == (made[0], False)


async def test_under_reuse_a_connection_waits_as_long_as_a_start_takes_for_a_container_to_come_back() -> None:
    pool, made, admission = a_pool(warm=0, reuse=5)
    first, _ = await start_and_claim(pool, made)
    waiting = await in_line(pool)
    assert len(made) == 1, "no start asked for: the one serving is likely back sooner"
    pool.give_back(first)
    assert await waiting == (first, True), "it was ready before that connection needed it"
    waiting = asyncio.create_task(pool.claim())
    await asyncio.sleep(START_SECONDS_GUESS * 2)
    assert len(made) == 2, "none came back within a start's time: it asks for one"
    pool.give_back(first)
    assert await waiting == (first, True), "one back all the same goes to it before its start ends"
    made[1].ready_now()
    await settle()
    assert made[1].stopped and admission.running == 1, "no one waits and warm 0 keeps none: stopped, slot freed"


async def test_a_failed_start_reaches_a_connection_only_when_no_other_start_is_coming_for_it() -> None:
    pool, made, admission = a_pool(warm=0)
    gone = await in_line(pool)
    left = await in_line(pool)
    gone.cancel()  # two starts now come for one connection
    await settle()
    made[0].fail_now()
    await settle()
    assert not left.done() and made[0].stopped, "the other start still comes for it"
    made[1].fail_now()
    instance, ready = await left
    assert (instance, ready, instance.start_failure) == (made[1], False, Outcome.START_FAILED)
    assert admission.running == 1, "the failed one's slot goes with it to the connection that answers for it"


async def test_a_connection_that_gives_up_waiting_leaves_its_start_to_the_next_who_asks_for_none() -> None:
    pool, made, admission = a_pool(warm=0)
    await given_up(pool)
    later = await in_line(pool)
    assert len(made) == 1, "the start under way is counted on instead"
    made[0].ready_now()
    assert await later == (made[0], False)
    assert admission.running == 1


async def test_a_connection_counting_on_another_ones_start_gets_its_failure() -> None:
    pool, made, _ = a_pool(warm=0)
    await given_up(pool)
    later = await in_line(pool)
    made[0].fail_now()
    instance, ready = await asyncio.wait_for(later, 1)
    assert (instance, ready, instance.start_failure) == (made[0], False, Outcome.START_FAILED)


async def test_close_waits_for_a_start_a_connection_asked_for_and_that_connection_still_gets_it() -> None:
    pool, made, admission = a_pool(warm=4)
    waiting = await in_line(pool)
    closing = asyncio.create_task(pool.close())
    await settle()
    assert not closing.done(), "a start a connection waits for is not cut off"
    made[0].ready_now()
    assert await waiting == (made[0], False)
    await closing
    assert admission.running == 1 and not made[0].stopped


async def test_a_start_that_cannot_begin_gives_back_its_slot_and_refuses_the_connection_counting_on_it() -> None:
    pool, made, admission = a_pool(warm=4, fails=1)
    with pytest.raises(Overloaded, match="no container could be started: .*Too many open files"):
        await asyncio.wait_for(pool.claim(), 1)
    await settle()
    assert admission.running == 0 and not made, "no slot is held for a start that never began"
    second = await in_line(pool)
    made[0].ready_now()
    assert await asyncio.wait_for(second, 1) == (made[0], False), "the next connection starts one as usual"


async def test_a_start_that_never_gets_ready_refuses_its_connection_within_the_bound() -> None:
    pool, made, admission = a_pool(start_bound=0.2)
    with pytest.raises(Overloaded, match="no container got ready within 0.2 s"):
        await asyncio.wait_for(pool.claim(), 5)
    made[0].ready_now()  # the start ends after all, with no one waiting and nothing to keep warm
    await settle()
    assert made[0].stopped and admission.running == 0


async def start_and_claim(pool: WarmPool, made: list[Container]) -> tuple[Container, bool]:
    """A connection's container, started for it: the pool is empty."""
    claim = await in_line(pool)
    made[-1].ready_now()
    instance, ready = await claim
    assert isinstance(instance, Container)
    return instance, ready
