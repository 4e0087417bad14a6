"""Functions from source beside an image function of the same runtime, in one run.

Both functions answer the same request the same way (a small JSON object) on Debian's python3:
the image function is the plain-style handler built into an image with ``faas build`` (its
/app compiled, the SDK copied in), the source function the same handler deployed with ``faas
new --runtime python --code``. For each, warm (the default pool), cold (``--warm 0``) and fork
(``--sandbox fork``, children of a template waiting in the default pool):
connect→last byte, p50 and p99, over ``--requests`` sequential requests one every ``--gap``
seconds, rows interleaved so the host's drift touches both alike; the ratio source/image at p50,
and from the daemon's metrics how many of each function's connections found a container ready
and how many waited for a start, and its mean container start: a warm row whose pool ran dry
shows it there.
Then: the deploy time of a source function without dependencies (``faas new`` end to end, the
runtime already added; each deploy brings new code), ``POST /v1/run`` latency (run-once, through
the API client), and the delay from a generator's ``yield`` to the client's read of its event. As
root:

    sudo .venv/bin/python -m bench.source [--requests 200] [--gap 0.05] [--cache DIR]
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from bench.daemon import BenchDaemon, bench_parser, work_dir
from bench.speed import one_request, percentile
from faas_cli.client import Client, UnixEndpoint
from faas_cli.imagebuild import build_python_image
from tools.build_image import build_runtime_image

HANDLER = 'def handler(event, context):\n    return {"sum": event.get("a", 0) + event.get("b", 0)}\n'
IMAGE_APP = (
    "from faas_handler import serve\n\n\n"
    "def handle(request):\n"
    "    event = request.json() if request.body else {}\n"
    '    return {"sum": event.get("a", 0) + event.get("b", 0)}\n\n\n'
    "serve(handle)\n"
)
STREAM = "import time\n\ndef handler(event, context):\n    yield {'t': time.time()}\n"
MODES = {"warm": (), "cold": ("--warm", "0"), "fork": ("--sandbox", "fork")}


def latencies(address: tuple[str, int], requests: int, gap: float) -> list[float]:
    """Connect→last byte of ``requests`` sequential requests, one every ``gap`` seconds."""
    values = []
    for _ in range(requests):
        started = time.perf_counter()
        sample = one_request(address)
        if sample.ok:
            values.append(sample.last_byte)
        time.sleep(max(0.0, gap - (time.perf_counter() - started)))
    return values


def stream_delays(ip: str, requests: int, gap: float) -> list[float]:
    """Seconds from the generator's yield (its own clock) to the client's read of the event."""
    delays = []
    for _ in range(requests):
        conn = http.client.HTTPConnection(ip, 80, timeout=30)
        conn.request("GET", "/")
        response = conn.getresponse()
        line = response.readline()
        arrived = time.time()
        if line.startswith(b"data: "):
            delays.append(arrived - json.loads(line[len("data: ") :])["t"])
        response.read()
        conn.close()
        time.sleep(gap)
    return delays


def pool_figures(metrics: str) -> dict[str, str]:
    """Per function, from the daemon's /metrics: connections by where their container came from,
    and the mean container start."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "faasd_connection_containers_total":
                values[sample.labels["function"]][sample.labels["path"]] = sample.value
            elif sample.name.startswith("faasd_container_start_seconds_") and "le" not in sample.labels:
                values[sample.labels["function"]][sample.name.rpartition("_")[2]] = sample.value
    return {
        function: f"ready {v.get('warm', 0):.0f} / waited {v.get('cold', 0):.0f}, "
        f"start mean {v.get('sum', 0) / max(v.get('count', 0), 1) * 1000:.0f} ms"
        for function, v in values.items()
    }


def figures(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:7.2f} ms  p99 {percentile(values, 99) * 1000:7.2f} ms  n={len(values)}"
    )


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05)
    options = parser.parse_args()
    with work_dir() as work:
        runtime_image, image = work / "runtime.tar", work / "image.tar"
        build_runtime_image(runtime_image, "python", options.cache)
        (work / "app").mkdir()
        (work / "app" / "app.py").write_text(IMAGE_APP)
        build_python_image(image, options.cache, work / "app")
        (work / "add.py").write_text(HANDLER)
        with BenchDaemon(work / "daemon") as daemon:
            daemon.faas("runtime", "add", "python", "-f", str(runtime_image))
            addresses = {}
            for mode, flags in MODES.items():
                addresses["image", mode] = daemon.deploy(f"image-{mode}", image, *flags)[0]
                daemon.faas("new", f"source-{mode}", "--runtime", "python", "--code", str(work / "add.py"), *flags)
                addresses["source", mode] = (daemon.ip(f"source-{mode}"), 80)
            for address in addresses.values():
                latencies(address, 5, options.gap)  # the first container of each, and its pool
            results: dict[tuple[str, str], list[float]] = {key: [] for key in addresses}
            rounds = 4
            for _ in range(rounds):  # interleaved: drift touches both sides alike
                for key, address in addresses.items():
                    results[key] += latencies(address, options.requests // rounds, options.gap)

            client = Client(UnixEndpoint(daemon.socket))
            pools = pool_figures(client.metrics())

            deploys = []
            for n in range(10):
                (work / "add.py").write_text(HANDLER + f"# deploy {n}\n")
                deploys.append(daemon.faas("new", "deployed", "--runtime", "python", "--code", str(work / "add.py")))

            runs = []
            body = {"runtime": "python", "files": {"add.py": HANDLER}, "entry": "add.py", "input": {"a": 1}}
            for _ in range(30):
                started = time.perf_counter()
                assert client.run(body)["result"] == {"sum": 1}
                runs.append(time.perf_counter() - started)

            (work / "stream.py").write_text(STREAM)
            daemon.faas("new", "stream", "--runtime", "python", "--code", str(work / "stream.py"))
            delays = stream_delays(daemon.ip("stream"), 50, options.gap)

    print(f"bench.source: {options.requests} sequential requests per row, one every {options.gap} s")
    for mode in MODES:
        image_p50 = statistics.median(results["image", mode])
        source_p50 = statistics.median(results["source", mode])
        print(f"  {mode:5} image   {figures(results['image', mode])}  {pools.get(f'image-{mode}', '')}")
        ratio = source_p50 / image_p50
        print(f"  {mode:5} source  {figures(results['source', mode])}  ratio source/image p50 {ratio:.2f}")
        print(f"{'':15}{pools.get(f'source-{mode}', '')}")
    print(f"  deploy from source, no dependencies (faas new end to end)  {figures(deploys)}")
    print(f"  run once (POST /v1/run)                                    {figures(runs)}")
    print(f"  SSE yield -> client read                                   {figures(delays)}")


if __name__ == "__main__":
    main()
