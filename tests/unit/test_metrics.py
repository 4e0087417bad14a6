"""What ``/metrics`` reads of the event loop's state, it reads on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import prometheus_client
from aiohttp.test_utils import make_mocked_request

from faasd import metrics
from faasd.api import get_metrics


async def test_gauges_of_the_loops_state_are_read_on_the_loop_before_the_page_is_rendered() -> None:
    readers: list[int] = []

    def warm() -> float:
        readers.append(threading.get_ident())
        return 3

    metrics.sampled(metrics.WARM, warm)
    response = await get_metrics(make_mocked_request("GET", "/metrics"))
    assert readers == [threading.get_ident()], "read once, on the loop's thread"
    assert b"\nfaasd_warm_containers 3.0\n" in response.body
    assert response.content_type == prometheus_client.CONTENT_TYPE_LATEST.split(";")[0]


def lag_observations() -> tuple[float, float]:
    """How many loop-lag samples there are, and their sum in seconds."""
    samples = {s.name: s.value for family in metrics.LOOP_LAG.collect() for s in family.samples}
    return samples["faasd_loop_lag_seconds_count"], samples["faasd_loop_lag_seconds_sum"]


async def test_a_blocked_loop_shows_as_loop_lag() -> None:
    watching = asyncio.create_task(metrics.watch_loop_lag())
    await asyncio.sleep(0)
    count, total = lag_observations()
    time.sleep(0.5)  # what a close that lingers, or an fsync on the loop, would do
    await asyncio.sleep(metrics.LOOP_LAG_EVERY_SECONDS)
    watching.cancel()
    later_count, later_total = lag_observations()
    assert later_count > count and later_total - total >= 0.5 - metrics.LOOP_LAG_EVERY_SECONDS
