"""Latency of one connection through faasd, beside a raw runc-per-connection loop.

Both sides serve the same rootfs and the same handler (the example Python handler). Each request
uses a new TCP connection. The script measures connect→first byte and connect→last byte,
sequentially and at concurrency 8, all in one run, because figures from different runs do not
compare. Run it as root:

    sudo .venv/bin/python -m bench.latency [--requests 200] [--cache /var/cache/faasd-tests]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser, example_image

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
BASELINE_ADDRESS = ("127.0.0.1", 18080)


@dataclass(frozen=True)
class Sample:
    first_byte: float
    last_byte: float
    ok: bool


def one_request(address: tuple[str, int]) -> Sample:
    """Connect, send one GET, read to EOF; times are seconds from before connect()."""
    start = time.perf_counter()
    first = None
    data = b""
    try:
        with socket.create_connection(address, timeout=60) as sock:
            sock.sendall(REQUEST)
            while chunk := sock.recv(65536):
                first = first or time.perf_counter()
                data += chunk
    except OSError:
        return Sample(0.0, 0.0, False)
    end = time.perf_counter()
    return Sample((first or end) - start, end - start, data.startswith(b"HTTP/1.1 200"))


def run_load(address: tuple[str, int], requests: int, concurrency: int) -> tuple[list[Sample], float]:
    """``requests`` requests spread over ``concurrency`` workers; returns samples and wall time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        samples = list(pool.map(lambda _: one_request(address), range(requests)))
    return samples, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


class RawRuncServer:
    """The baseline: accept, write a runc-spec config.json, ``runc run``, hand the socket over.

    It uses no faasd code, only ``runc spec`` defaults adjusted as little as the handler needs.
    """

    def __init__(self, rootfs: Path, args: list[str], env: list[str], workdir: Path) -> None:
        self._workdir = workdir
        self._runc_root = workdir / "runc"
        subprocess.run(["runc", "spec", "--bundle", str(workdir)], check=True)
        spec = json.loads((workdir / "config.json").read_text())
        (workdir / "config.json").unlink()
        spec["process"].update(terminal=False, args=args, env=env, cwd="/app")
        spec["root"] = {"path": str(rootfs), "readonly": True}
        if {"type": "network"} not in spec["linux"]["namespaces"]:
            spec["linux"]["namespaces"].append({"type": "network"})
        self._spec = spec
        self._log = open(workdir / "containers.log", "ab")  # noqa: SIM115 - lives as long as the server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> RawRuncServer:
        self._thread.start()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.cancel()
        asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _drain(self) -> None:
        """Let the last containers exit so nothing is left pending when the loop stops."""
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=20)

    async def _serve(self) -> None:
        listener = socket.create_server(BASELINE_ADDRESS, backlog=1024, reuse_port=True)
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            loop.create_task(self._one(client))

    async def _one(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        container_id = uuid.uuid4().hex[:12]
        bundle = self._workdir / container_id
        bundle.mkdir()
        control_path = bundle / "control.sock"
        control = socket.socket(socket.AF_UNIX)
        control.bind(str(control_path))
        control.listen(1)
        control.setblocking(False)
        spec = dict(self._spec)
        spec["mounts"] = [
            *self._spec["mounts"],
            {"destination": "/control.sock", "type": "bind", "source": str(control_path), "options": ["bind"]},
        ]
        (bundle / "config.json").write_text(json.dumps(spec))
        proc = await asyncio.create_subprocess_exec(
            "runc",
            "--root",
            str(self._runc_root),
            "run",
            "--bundle",
            str(bundle),
            container_id,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        accepted = asyncio.ensure_future(loop.sock_accept(control))
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait({accepted, exited}, return_when=asyncio.FIRST_COMPLETED)
        if accepted.done():
            handler, _ = accepted.result()
            socket.send_fds(handler, [b'{"v":1}'], [client.fileno()])
            handler.close()
        else:
            accepted.cancel()
        control.close()
        await exited
        client.close()
        shutil.rmtree(bundle, ignore_errors=True)


def describe(samples: list[Sample], wall: float) -> dict[str, float]:
    good = [s for s in samples if s.ok]
    if not good:
        return {"ok": 0, "errors": len(samples)}
    first = [s.first_byte * 1000 for s in good]
    last = [s.last_byte * 1000 for s in good]
    return {
        "ok": len(good),
        "errors": len(samples) - len(good),
        "first_p50": statistics.median(first),
        "first_p99": percentile(first, 99),
        "last_p50": statistics.median(last),
        "last_p99": percentile(last, 99),
        "rps": len(good) / wall,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario")
    options = parser.parse_args()
    with example_image(options.cache) as image:
        workdir = image.parent
        results: dict[tuple[str, int], dict[str, float]] = {}
        with BenchDaemon(workdir / "faasd") as faasd:
            address, _ = faasd.deploy("hello", image)
            for concurrency in (1, 8):
                one_request(address)
                results[("faasd", concurrency)] = describe(*run_load(address, options.requests, concurrency))
            baseline_dir = workdir / "raw"
            baseline_dir.mkdir()
            with RawRuncServer(faasd.rootfs("hello"), ["python3", "/app/app.py"], ["PATH=/usr/bin:/bin"], baseline_dir):
                for concurrency in (1, 8):
                    one_request(BASELINE_ADDRESS)
                    results[("raw runc", concurrency)] = describe(
                        *run_load(BASELINE_ADDRESS, options.requests, concurrency)
                    )

    print(f"{options.requests} requests per row, a new TCP connection each; times in ms")
    header = (
        f"{'server':<10}{'conc':>5}{'ok':>6}{'err':>5}{'first p50':>11}{'first p99':>11}"
        f"{'last p50':>10}{'last p99':>10}{'req/s':>8}"
    )
    print(header)
    for (server, concurrency), row in results.items():
        if not row["ok"]:
            print(f"{server:<10}{concurrency:>5}{0:>6}{row['errors']:>5}  (no successful request)")
            continue
        print(
            f"{server:<10}{concurrency:>5}{row['ok']:>6}{row['errors']:>5}{row['first_p50']:>11.1f}{row['first_p99']:>11.1f}"
            f"{row['last_p50']:>10.1f}{row['last_p99']:>10.1f}{row['rps']:>8.1f}"
        )
    for concurrency in (1, 8):
        ours, raw = results[("faasd", concurrency)], results[("raw runc", concurrency)]
        if ours["ok"] and raw["ok"]:
            print(
                f"ratio faasd/raw at c={concurrency}: first p50 {ours['first_p50'] / raw['first_p50']:.2f}x, "
                f"last p50 {ours['last_p50'] / raw['last_p50']:.2f}x, req/s {ours['rps'] / raw['rps']:.2f}x"
            )


if __name__ == "__main__":
    main()
