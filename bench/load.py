"""Sustained load: many clients at once, each request on a new TCP connection.

Two apps, each deployed on a fresh faasd: the light one (the example Python handler) and the
heavy one (the Flask example, whose every start imports Flask). For each, and each
``--concurrency``, asyncio clients send GETs back to back for ``--seconds``. The script prints
the answers by status (and connection errors by kind), latency from connect to the last byte
(p50, p99), requests/s, and the daemon's peak RSS and peak open fds, sampled from /proc while
the load runs; then each app's requests/s at every concurrency as a ratio to its lowest one.
Run it as root:

    sudo .venv/bin/python -m bench.load [--concurrency 4 64] [--seconds 20] [--app light heavy] [--sandbox fork]

``--sandbox fork`` deploys the apps in fork mode: each connection a child of a template.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser, example_image
from tools.build_image import HANDLERS, build_python_image

# The light app starts in tens of ms; the heavy one imports Flask on every start.
APPS = {"light": HANDLERS / "hello", "heavy": HANDLERS / "flask"}
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
REQUEST_TIMEOUT_SECONDS = 60.0
SAMPLE_EVERY_SECONDS = 0.1


@dataclass
class Tally:
    """What the clients saw: answers by status or error kind, and the latency of each answer."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class Peaks:
    """The largest values seen while sampling the daemon's /proc entries."""

    rss_kib: int = 0
    fds: int = 0


async def one_request(address: tuple[str, int]) -> str:
    """Connect, send one GET, read to EOF; return the status code, as text."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(REQUEST)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    if not response:
        return "closed without an answer"
    return response.split(b" ", 2)[1].decode()


async def client(address: tuple[str, int], until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            outcome = await asyncio.wait_for(one_request(address), REQUEST_TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            outcome = type(exc).__name__
        else:
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.outcomes[outcome] += 1


def sample(pid: int, peaks: Peaks) -> None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            peaks.rss_kib = max(peaks.rss_kib, int(line.split()[1]))
    peaks.fds = max(peaks.fds, len(os.listdir(f"/proc/{pid}/fd")))


async def sampler(pid: int, peaks: Peaks, stop: asyncio.Event) -> None:
    """Sample the daemon until ``stop``; /proc reads are tiny, so they stay on the loop."""
    while not stop.is_set():
        sample(pid, peaks)
        await asyncio.sleep(SAMPLE_EVERY_SECONDS)


async def run_load(address: tuple[str, int], pid: int, concurrency: int, seconds: float) -> tuple[Tally, Peaks, float]:
    """Load ``address`` for ``seconds``; requests still running then finish and count."""
    tally, peaks, stop = Tally(), Peaks(), asyncio.Event()
    watching = asyncio.create_task(sampler(pid, peaks, stop))
    started = time.monotonic()
    await asyncio.gather(*(client(address, started + seconds, tally) for _ in range(concurrency)))
    wall = time.monotonic() - started
    stop.set()
    await watching
    return tally, peaks, wall


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(tally: Tally, peaks: Peaks, wall: float, concurrency: int) -> None:
    total = sum(tally.outcomes.values())
    ok = tally.outcomes["200"]
    print(f"{total} requests at c={concurrency} in {wall:.1f} s, a new TCP connection each")
    print(f"success (200): {ok} ({ok / total:.1%})" if total else "no request finished")
    for outcome, count in sorted(tally.outcomes.items()):
        print(f"  {outcome}: {count}")
    if tally.latencies_ms:
        print(
            f"latency connect->last byte: p50 {statistics.median(tally.latencies_ms):.0f} ms, "
            f"p99 {percentile(tally.latencies_ms, 99):.0f} ms"
        )
    print(f"requests/s: {ok / wall:.1f} answered 200, {total / wall:.1f} in all")
    print(f"daemon: peak RSS {peaks.rss_kib / 1024:.1f} MiB, peak open fds {peaks.fds}")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 64], help="clients sending at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long clients start new requests")
    parser.add_argument("--app", nargs="+", choices=list(APPS), default=list(APPS), help="which apps to load")
    parser.add_argument("--sandbox", choices=["runc", "fork"], default="runc", help="the apps' sandbox mode")
    options = parser.parse_args()
    throughput: dict[str, dict[int, float]] = {}
    with example_image(options.cache) as light:
        for app in options.app:
            image = light if app == "light" else light.with_name(f"{app}.tar")
            if image != light:
                build_python_image(image, cache_dir=options.cache, app_dir=APPS[app])
            throughput[app] = {}
            for concurrency in options.concurrency:
                # A fresh daemon each: no warm pool or arrival rate carries over from the run before.
                with BenchDaemon(light.parent / f"faasd-{app}-{concurrency}") as faasd:
                    address, _ = faasd.deploy(app, image, "--sandbox", options.sandbox)
                    tally, peaks, wall = asyncio.run(run_load(address, faasd.pid, concurrency, options.seconds))
                print(f"== {app} app ({APPS[app].name}) ==")
                report(tally, peaks, wall, concurrency)
                throughput[app][concurrency] = tally.outcomes["200"] / wall
    print("== answered 200 per second, and as a ratio to the lowest concurrency ==")
    for app, by_concurrency in throughput.items():
        base = by_concurrency[min(by_concurrency)]
        cells = [f"c={c}: {rate:.1f}/s ({rate / base:.2f}x)" for c, rate in sorted(by_concurrency.items())]
        print(f"{app:6} " + "  ".join(cells))


if __name__ == "__main__":
    main()
