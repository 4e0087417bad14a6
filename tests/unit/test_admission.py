"""Admission on a real event loop: who runs, who waits, who is refused."""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from faasd.admission import Admission, AdmissionLimits, Overloaded, Starts


def admission(total: int = 2, per_function: int = 2, queue: int = 4, queue_timeout: float = 5.0) -> Admission:
    return Admission(AdmissionLimits(total, per_function, queue, queue_timeout))


@contextlib.asynccontextmanager
async def slot(gate: Admission, function: str) -> AsyncIterator[None]:
    await gate.acquire(function)
    try:
        yield
    finally:
        gate.release(function)


async def hold(gate: Admission, function: str, release: asyncio.Event, log: list[str]) -> None:
    async with slot(gate, function):
        log.append(function)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_are_granted_in_arrival_order_once_one_frees() -> None:
    gate = admission(total=1)
    releases = [asyncio.Event() for _ in range(3)]
    log: list[str] = []
    tasks = [asyncio.create_task(hold(gate, name, r, log)) for name, r in zip("abc", releases, strict=True)]
    await settle()
    assert (log, gate.running, gate.queued) == (["a"], 1, 2)
    releases[0].set()
    await settle()
    assert log == ["a", "b"]
    releases[1].set()
    releases[2].set()
    await asyncio.gather(*tasks)
    assert (log, gate.running, gate.queued) == (["a", "b", "c"], 0, 0)


async def test_a_busy_function_does_not_hold_up_another() -> None:
    gate = admission(total=3, per_function=1)
    release = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(hold(gate, name, release, log)) for name in ("a", "a", "b")]
    await settle()
    assert log == ["a", "b"], "the second 'a' waits for its function; 'b' passes it"
    assert gate.queued == 1
    release.set()
    await asyncio.gather(*tasks)
    assert log == ["a", "b", "a"]


async def test_a_full_queue_refuses_at_once() -> None:
    gate = admission(total=1, queue=1)
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(gate, "a", release, [])) for _ in range(2)]
    await settle()
    with pytest.raises(Overloaded, match="queue is full") as refused:
        async with slot(gate, "a"):
            pass
    assert refused.value.retry_after == 5
    release.set()
    await asyncio.gather(*tasks)


async def test_a_wait_past_the_queue_timeout_is_refused_and_leaves_the_queue() -> None:
    gate = admission(total=1, queue_timeout=0.05)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(gate, "a", release, []))
    await settle()
    with pytest.raises(Overloaded, match="within 0.05 s"):
        async with slot(gate, "a"):
            pass
    assert gate.queued == 0
    release.set()
    await holder
    async with slot(gate, "a"):
        assert gate.running == 1


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = admission(total=1)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(gate, "a", release, []))
    await settle()
    waiter = asyncio.create_task(hold(gate, "b", asyncio.Event(), []))
    await settle()
    assert gate.queued == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert gate.queued == 0
    release.set()
    await holder
    assert gate.running == 0


def test_derived_limits_follow_the_ones_given() -> None:
    limits = AdmissionLimits.derive(total=10)
    assert (limits.total, limits.per_function, limits.queue) == (10, 10, 40)
    assert AdmissionLimits.derive(total=4, per_function=9, queue=0).per_function == 4
    assert AdmissionLimits.derive().total >= 16


async def test_a_warm_start_takes_only_a_free_slot_and_never_passes_a_waiter() -> None:
    gate = admission(total=1)
    assert gate.try_acquire("a")
    assert not gate.try_acquire("b"), "no slot is free"
    waiter = asyncio.create_task(gate.acquire("b"))
    await settle()
    gate.release("a")
    await settle()
    assert waiter.done() and gate.running == 1
    gate.release("b")
    assert gate.try_acquire("a")


async def test_a_waiting_connection_asks_for_a_warm_container_back() -> None:
    gate = admission(total=1)
    assert gate.try_acquire("warm")
    asked: list[bool] = []

    def reclaim() -> bool:
        asked.append(True)
        gate.release("warm")
        return True

    gate.reclaim = reclaim
    await asyncio.wait_for(gate.acquire("cold"), 1)
    assert asked == [True] and gate.running == 1


async def test_only_so_many_containers_start_at_once_and_the_rest_take_turns_in_order() -> None:
    starts = Starts(least=2, most=8, slow_seconds=60)
    running: list[int] = []
    order: list[int] = []
    release = asyncio.Event()

    async def start(number: int) -> None:
        async with starts.turn():
            order.append(number)
            running.append(number)
            await release.wait()
            running.remove(number)

    tasks = [asyncio.create_task(start(n)) for n in range(6)]
    await settle()
    assert (running, starts.waiting) == ([0, 1], 4)
    tasks[2].cancel()  # gave up waiting: takes no turn
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4, 5] and starts.waiting == 0


async def hold_turns(starts: Starts, count: int, seconds: float) -> None:
    async def start() -> None:
        async with starts.turn():
            await asyncio.sleep(seconds)

    await asyncio.gather(*(start() for _ in range(count)))


async def test_quick_starts_widen_the_window_and_slow_ones_halve_it_down_to_the_cpus() -> None:
    starts = Starts(least=2, most=16, slow_seconds=0.05)
    await hold_turns(starts, 6, 0)
    assert starts.limit == 8, "each quick start lets one more run at once"
    await hold_turns(starts, 40, 0)
    assert starts.limit == 16, "up to the slots"
    await hold_turns(starts, 16, 0.1)
    assert starts.limit == 8, "a round of slow starts halves it once"
    for _ in range(4):
        await asyncio.sleep(0.05)
        await hold_turns(starts, 2, 0.1)
    assert starts.limit == 2, "never below the CPUs"


def test_the_window_follows_the_machine_and_the_start_timeout() -> None:
    starts = Starts.for_machine(total=64, start_timeout=10)
    assert starts.limit == min(os.cpu_count() or 1, 64)
    assert Starts.for_machine(total=1, start_timeout=10).limit == 1
