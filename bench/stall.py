"""What a busy API and a hostile function do to the daemon's event loop, as ``/healthz`` latency.

Every function, the gateway and the control API share one event loop: whatever blocks it shows
as latency of ``GET /healthz``, whose answer costs next to nothing. A prober sends one every
20 ms on the control socket through three phases, on one daemon:

- idle: nothing else runs;
- busy: new functions are deployed and removed back to back (imports, fsync'd registry commits,
  mounts), while 16 clients send requests to the example handler, each on a new connection;
- linger: clients ask the probe handler to set ``SO_LINGER`` (5 s) on their socket and to fill
  its send buffer while they do not read; the handler exits, and the socket's last close is
  the daemon's.

It prints the latency's p50, p99 and max in each phase, each phase's p99 as a ratio to the
idle one's, and the daemon's own loop lag in each phase (``faasd_loop_lag_seconds``: how late a
timer due every 100 ms ran). As root:

    sudo .venv/bin/python -m bench.stall [--seconds 15]
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import math
import re
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser, example_image
from bench.load import percentile, run_load
from tools.build_image import build_python_image

PROBE_APP = Path(__file__).resolve().parent.parent / "tests" / "integration" / "probe"
LAG_BUCKET = re.compile(r'faasd_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)')
PROBE_EVERY_SECONDS = 0.02
PROBE_TIMEOUT_SECONDS = 30.0
LINGER_SECONDS = 5
ATTACKERS = 4
BUSY_CLIENTS = 16


@dataclass
class Phase:
    """What one phase showed: ``/healthz`` latencies in ms, and the daemon's own loop-lag samples
    by bucket (upper bound in seconds), counted during the phase."""

    healthz_ms: list[float]
    lag_buckets: dict[float, float]


def get(path: Path, target: str) -> bytes:
    """One GET on the control socket; the body."""
    conn = http.client.HTTPConnection("localhost", timeout=PROBE_TIMEOUT_SECONDS)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.settimeout(PROBE_TIMEOUT_SECONDS)
    try:
        conn.sock.connect(str(path))
        conn.request("GET", target)
        return conn.getresponse().read()
    finally:
        conn.close()


def healthz_ms(path: Path) -> float:
    """One ``GET /healthz``, in ms from connect to the last byte."""
    started = time.perf_counter()
    get(path, "/healthz")
    return (time.perf_counter() - started) * 1000


def lag_buckets(path: Path) -> dict[float, float]:
    """The daemon's ``faasd_loop_lag_seconds`` histogram: cumulative sample counts by upper bound."""
    buckets = {}
    for line in get(path, "/metrics").decode().splitlines():
        if match := LAG_BUCKET.fullmatch(line):
            buckets[float(match[1])] = float(match[2])
    return buckets


def probe_while(path: Path, work: Callable[[threading.Event], None], seconds: float) -> Phase:
    """Probe ``/healthz`` while ``work`` runs in threads, for ``seconds``."""
    before = lag_buckets(path)
    stop = threading.Event()
    worker = threading.Thread(target=work, args=(stop,))
    worker.start()
    latencies = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        latencies.append(healthz_ms(path))
        time.sleep(PROBE_EVERY_SECONDS)
    stop.set()
    worker.join()
    after = lag_buckets(path)
    return Phase(latencies, {bound: after[bound] - before.get(bound, 0.0) for bound in after})


def idle(stop: threading.Event) -> None:
    stop.wait()


def busy(
    faasd: BenchDaemon, image: Path, address: tuple[str, int], seconds: float
) -> Callable[[threading.Event], None]:
    """Deploys and removals back to back, beside requests from ``BUSY_CLIENTS`` clients."""

    def deploys(stop: threading.Event) -> None:
        for number in itertools.count():
            if stop.is_set():
                return
            faasd.deploy(f"churn-{number}", image)
            faasd.remove(f"churn-{number}")

    def work(stop: threading.Event) -> None:
        churn = threading.Thread(target=deploys, args=(stop,))
        churn.start()
        asyncio.run(run_load(address, faasd.pid, BUSY_CLIENTS, seconds))
        churn.join()

    return work


def lingering(address: tuple[str, int]) -> Callable[[threading.Event], None]:
    """``ATTACKERS`` clients, each asking for ``/linger`` and holding the socket without reading."""

    def attack(stop: threading.Event) -> None:
        while not stop.is_set():
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(address)
            client.sendall(f"GET /linger?s={LINGER_SECONDS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stop.wait(LINGER_SECONDS + 1)  # a close before then would reset the socket instead
            client.close()

    def work(stop: threading.Event) -> None:
        attackers = [threading.Thread(target=attack, args=(stop,)) for _ in range(ATTACKERS)]
        for attacker in attackers:
            attacker.start()
        for attacker in attackers:
            attacker.join()

    return work


def lag_quantile(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` of the samples (cumulative buckets)."""
    total = buckets[math.inf]
    return next(bound for bound, count in sorted(buckets.items()) if count >= q * total)


def report(phases: dict[str, Phase]) -> None:
    base = percentile(phases["idle"].healthz_ms, 99)
    print(f"GET /healthz every {PROBE_EVERY_SECONDS * 1000:.0f} ms, latency connect->last byte:")
    for name, phase in phases.items():
        latencies = phase.healthz_ms
        p99 = percentile(latencies, 99)
        print(
            f"  {name:7} n={len(latencies):4}  p50 {statistics.median(latencies):7.1f} ms  p99 {p99:7.1f} ms"
            f"  max {max(latencies):7.1f} ms  p99/idle {p99 / base:6.1f}x"
        )
    if not phases["idle"].lag_buckets:
        print("the daemon's loop lag: not measured by this faasd (no faasd_loop_lag_seconds)")
        return
    print("the daemon's loop lag (faasd_loop_lag_seconds, a timer due every 100 ms), bucket bounds:")
    for name, phase in phases.items():
        lag = phase.lag_buckets
        print(
            f"  {name:7} n={lag[math.inf]:4.0f}  p50 <= {lag_quantile(lag, 0.5) * 1000:6.1f} ms"
            f"  p99 <= {lag_quantile(lag, 0.99) * 1000:6.1f} ms  max <= {lag_quantile(lag, 1.0) * 1000:6.1f} ms"
        )


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each phase lasts")
    options = parser.parse_args()
    with example_image(options.cache) as image:
        probe = image.with_name("probe.tar")
        build_python_image(probe, cache_dir=options.cache, app_dir=PROBE_APP)
        with BenchDaemon(image.parent / "faasd") as faasd:
            hello, _ = faasd.deploy("hello", image)
            lingers, _ = faasd.deploy("lingers", probe, "--warm", "0")
            phases = {
                "idle": probe_while(faasd.socket, idle, options.seconds),
                "busy": probe_while(faasd.socket, busy(faasd, image, hello, options.seconds), options.seconds),
                "linger": probe_while(faasd.socket, lingering(lingers), options.seconds),
            }
    report(phases)


if __name__ == "__main__":
    main()
