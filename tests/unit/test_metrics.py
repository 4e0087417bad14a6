"""What ``/metrics`` reads of the event loop's state, it reads on the loop."""

from __future__ import annotations

import threading

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
