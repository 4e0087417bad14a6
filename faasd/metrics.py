"""What the daemon counts, in Prometheus form (``GET /metrics``, ``faas stats``).

Module-level metrics in prometheus-client's default registry, as is usual for one process.
Every connection is counted by the status the client saw: ``handler`` when the function
answered (the daemon never reads that answer, so it does not know its code), else the code
the daemon answered with itself.

Gauges of what the event loop owns (slots, queues, warm pools) are read on the loop, by
``sample`` just before a scrape; the page itself is rendered in a thread, which must never
iterate the loop's dicts and deques while the loop changes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# Start times of each series only lengthen the page; Prometheus knows when it first saw them.
disable_created_metrics()

# From a warm container's few milliseconds to a slow cold start of a big image.
START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "faasd_requests", "Connections served, by function and the status the client saw.", ["function", "status"]
)
ERRORS = Counter("faasd_errors", "Failures, by kind: a connection's outcome or an API error's class.", ["kind"])
CONTAINER_START = Histogram(
    "faasd_container_start_seconds",
    "From starting a container to its handler waiting on /control.sock.",
    ["function"],
    buckets=START_BUCKETS,
)
REQUEST_DURATION = Histogram(
    "faasd_request_duration_seconds", "From accepting a connection to its container being gone.", ["function"]
)
CONTAINERS = Gauge("faasd_containers_running", "Container slots taken now: all functions, and one-shot containers.")
WARM = Gauge("faasd_warm_containers", "Started containers whose handler waits for a connection, all functions.")
CONTAINER_PATH = Counter(
    "faasd_connection_containers",
    "Connections by where their container came from: warm (ready in the pool), cold (started for it).",
    ["function", "path"],
)
QUEUED = Gauge("faasd_queue_depth", "Connections waiting for a container slot.")
FUNCTIONS = Gauge("faasd_functions", "Deployed functions.")
LOOP_LAG = Histogram(
    "faasd_loop_lag_seconds",
    "How late the event loop, which every function and the API share, woke a timer due every 100 ms.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
LOOP_LAG_EVERY_SECONDS = 0.1
IMPORT_DURATION = Histogram(
    "faasd_import_seconds",
    "Image imports, from upload received to rootfs ready.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IMPORT_BYTES = Counter("faasd_import_bytes", "Bytes of image archives uploaded for import.")
# Every metric with a function label: a removed function's series go with it.
PER_FUNCTION = (REQUESTS, CONTAINER_START, REQUEST_DURATION, CONTAINER_PATH)


def forget(function: str) -> None:
    """Drop ``function``'s series (at ``faas rm``): one deployed later under its name starts from zero."""
    for metric in PER_FUNCTION:
        metric.remove_by_labels({"function": function})


def requests_by_status(function: str) -> dict[str, int]:
    """Connections served for ``function`` since faasd started, by the status its clients saw."""
    return {
        sample.labels["status"]: int(sample.value)
        for family in REQUESTS.collect()
        for sample in family.samples
        if sample.name == "faasd_requests_total" and sample.labels["function"] == function
    }


# Gauges read on the event loop before each scrape, with what reads them.
_SAMPLED: dict[Gauge, Callable[[], float]] = {}


def sampled(gauge: Gauge, read: Callable[[], float]) -> None:
    """Set ``gauge`` from ``read()`` on each ``sample``: for values only the loop may read."""
    _SAMPLED[gauge] = read


def sample() -> None:
    """Read every ``sampled`` gauge; call it on the event loop, before rendering the page."""
    for gauge, read in _SAMPLED.items():
        gauge.set(read())


async def watch_loop_lag() -> None:
    """Measure, until cancelled, how late the loop runs what is due: a blocked loop shows here."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LOOP_LAG_EVERY_SECONDS
        await asyncio.sleep(LOOP_LAG_EVERY_SECONDS)
        LOOP_LAG.observe(max(0.0, loop.time() - due))
