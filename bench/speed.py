"""faasd's speed per connection, beside a raw runc-per-connection loop, and its deploy time.

Both sides serve the same rootfs and the same handler (the example Python handler); each
request uses a new TCP connection. faasd runs in four modes: warm (the default pool), cold
(``--warm 0``: every connection starts its container), reuse (``--reuse 1000``: throughput
over isolation) and fork (``--sandbox fork``: a fresh sandbox forked per connection from a
template that loaded the app once). For each, and for the baseline: connect→first byte and
connect→last byte (p50/p90/p99), requests/s and errors, sequentially (paced, one request every
``--gap`` seconds, as a lightly used function sees them) and with 8 and 32 clients back to back;
the daemon's own CPU time per request and its peak RSS, the whole machine's CPU time per request
(busy jiffies from /proc/stat: daemon, runc, templates and handlers, and whatever else runs on the
host), and the CPU time per request of the processes each side owns (``own``: faasd with the
``runc run``s and containers it reaped, and a fork-mode template with the children it reaped;
the raw loop's reaped ``runc run``s and containers), which a shared host does not inflate. Then
the deploy time of a first and a second function on one base. All in one run, because figures
from different runs do not compare; and as the host drifts even within a run, each concurrency's
rows run together, the baseline both before and after faasd's (its figures pool the two). Each
faasd row gets a function of its own, deployed
for it and removed after it. As root:

    sudo .venv/bin/python -m bench.speed [--requests 200] [--gap 0.1] [--modes fork cold] [--cache DIR]

Last, the memory of fork mode: the PSS of a template, and of each of ``--held`` connections its
children hold open at once (each waits for the rest of its request head).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
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
from typing import Any

from bench.daemon import BenchDaemon, bench_parser, example_image
from bench.deploy import report_deploys

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


def run_load(address: tuple[str, int], requests: int, concurrency: int, gap: float) -> tuple[list[Sample], float]:
    """``requests`` requests over ``concurrency`` workers back to back, or, at concurrency 1, one
    every ``gap`` seconds; returns the samples and the wall time."""
    started = time.perf_counter()
    if concurrency == 1:
        samples = []
        for n in range(requests):
            time.sleep(max(0.0, started + n * gap - time.perf_counter()))
            samples.append(one_request(address))
        return samples, time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        samples = list(pool.map(lambda _: one_request(address), range(requests)))
    return samples, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def runc_spec_defaults(scratch: Path, rootfs: Path, args: list[str], env: list[str]) -> dict[str, Any]:
    """What ``runc spec`` writes, adjusted only as far as a handler needs: no terminal, its
    command, a read-only ``rootfs``, a network namespace of its own."""
    subprocess.run(["runc", "spec", "--bundle", str(scratch)], check=True)
    spec = json.loads((scratch / "config.json").read_text())
    (scratch / "config.json").unlink()
    spec["process"].update(terminal=False, args=args, env=env, cwd="/app")
    spec["root"] = {"path": str(rootfs), "readonly": True}
    if {"type": "network"} not in spec["linux"]["namespaces"]:
        spec["linux"]["namespaces"].append({"type": "network"})
    return spec


class RawRuncServer:
    """The baseline: accept, write a runc-spec config.json, ``runc run``, hand the socket over.

    It uses no faasd code, only ``runc spec`` defaults adjusted as little as the handler needs.
    """

    def __init__(self, rootfs: Path, args: list[str], env: list[str], workdir: Path) -> None:
        self._workdir = workdir
        self._runc_root = workdir / "runc"
        self._spec = runc_spec_defaults(workdir, rootfs, args, env)
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


CONCURRENCIES = (1, 8, 32)
# faasd's modes: the options of their ``faas new``.
MODES = {
    "warm": ("--warm", "16"),
    "cold": ("--warm", "0"),
    "reuse": ("--reuse", "1000", "--warm", "16"),
    "fork": ("--sandbox", "fork"),
}
BASELINE = "raw runc"
BASELINE_ROOTFS = "baseline"  # the function whose rootfs the baseline serves: it gets no connections


def describe(samples: list[Sample], wall: float) -> dict[str, float]:
    good = [s for s in samples if s.ok]
    row: dict[str, float] = {"ok": len(good), "errors": len(samples) - len(good), "rps": len(good) / wall}
    for key, values in (("first", [s.first_byte for s in good]), ("last", [s.last_byte for s in good])):
        for q in (50, 90, 99):
            row[f"{key}_p{q}"] = percentile([v * 1000 for v in values], q) if values else float("nan")
    return row


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine since boot: /proc/stat's first line, all but idle and iowait."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command's name (state, ppid, ...); empty once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the children it has reaped (utime, stime, cutime, cstime)."""
    return sum(int(value) for value in stat_fields(pid)[11:15]) / os.sysconf("SC_CLK_TCK")


def own_children_cpu_seconds() -> float:
    """CPU time of this process's reaped children: the raw loop's ``runc run``s and their containers."""
    times = os.times()
    return times.children_user + times.children_system


def measure(address: tuple[str, int], requests: int, concurrency: int, gap: float) -> tuple[list[Sample], float, float]:
    """The samples, the wall time, and the machine's busy CPU seconds over them (the warm-up's too)."""
    busy = machine_cpu_seconds()
    # Steady state: the first connections after a deploy or a change of load pay for cold caches
    # and, in faasd, for pools that have not yet grown to the load.
    run_load(address, concurrency, concurrency, gap)
    samples, wall = run_load(address, requests, concurrency, gap)
    return samples, wall, machine_cpu_seconds() - busy


def table_order(item: tuple[tuple[str, int], dict[str, float]]) -> tuple[int, int]:
    """faasd's modes first, the baseline last; each by concurrency."""
    (server, concurrency), _ = item
    return [*MODES, BASELINE].index(server), concurrency


def per_request_ms(seconds: float, requests: int) -> float:
    return seconds * 1000 / requests


def print_table(results: dict[tuple[str, int], dict[str, float]], requests: int, gap: float) -> None:
    print(f"{requests} requests per row, a new TCP connection each; c=1 paced one every {gap * 1000:.0f} ms; ms")
    print(
        f"{'server':<10}{'c':>3}{'ok':>5}{'err':>4}"
        f"{'first p50':>10}{'p90':>7}{'p99':>7}{'last p50':>10}{'p90':>7}{'p99':>7}{'req/s':>8}{'cpu ms/req':>11}"
        f"{'machine ms/req':>15}{'own ms/req':>11}"
    )
    for (server, concurrency), row in sorted(results.items(), key=table_order):
        cpu = f"{row['cpu_ms']:.2f}" if "cpu_ms" in row else "-"
        print(
            f"{server:<10}{concurrency:>3}{row['ok']:>5.0f}{row['errors']:>4.0f}"
            f"{row['first_p50']:>10.1f}{row['first_p90']:>7.1f}{row['first_p99']:>7.1f}"
            f"{row['last_p50']:>10.1f}{row['last_p90']:>7.1f}{row['last_p99']:>7.1f}{row['rps']:>8.1f}{cpu:>11}"
            f"{row['machine_ms']:>15.1f}{row['own_ms']:>11.1f}"
        )
    print("ratios to raw runc at the same concurrency (first-byte p50, last-byte p50, req/s, machine CPU, own CPU):")
    for (server, concurrency), row in sorted(results.items(), key=table_order):
        raw = results[(BASELINE, concurrency)]
        if server != BASELINE and row["ok"] and raw["ok"]:
            print(
                f"  {server:<6} c={concurrency:<3} {row['first_p50'] / raw['first_p50']:.3f}x  "
                f"{row['last_p50'] / raw['last_p50']:.3f}x  {row['rps'] / raw['rps']:.2f}x  "
                f"{row['machine_ms'] / raw['machine_ms']:.3f}x  {row['own_ms'] / raw['own_ms']:.3f}x"
            )


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per row")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between sequential requests")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="faasd's modes to run")
    parser.add_argument("--held", type=int, default=16, help="connections held open to measure fork mode's memory")
    options = parser.parse_args()
    modes = {mode: MODES[mode] for mode in options.modes}
    with example_image(options.cache) as image:
        workdir = image.parent
        results: dict[tuple[str, int], dict[str, float]] = {}
        (workdir / "raw").mkdir()
        with BenchDaemon(workdir / "faasd") as faasd:
            faasd.deploy(BASELINE_ROOTFS, image, "--warm", "0")
            rootfs = faasd.rootfs(BASELINE_ROOTFS)
            with RawRuncServer(rootfs, ["python3", "/app/app.py"], ["PATH=/usr/bin:/bin"], workdir / "raw"):
                for concurrency in CONCURRENCIES:
                    # The host drifts: the baseline runs before and after faasd's rows and pools both.
                    own = own_children_cpu_seconds()
                    before = measure(BASELINE_ADDRESS, options.requests, concurrency, options.gap)
                    own = own_children_cpu_seconds() - own
                    for mode, flags in modes.items():
                        row = measure_mode(faasd, image, mode, flags, options.requests, concurrency, options.gap)
                        results[(mode, concurrency)] = row
                    own -= own_children_cpu_seconds()
                    after = measure(BASELINE_ADDRESS, options.requests, concurrency, options.gap)
                    own += own_children_cpu_seconds()
                    baseline = describe(before[0] + after[0], before[1] + after[1])
                    requests = len(before[0]) + len(after[0]) + 2 * concurrency
                    baseline["machine_ms"] = per_request_ms(before[2] + after[2], requests)
                    baseline["own_ms"] = per_request_ms(own, requests)
                    results[(BASELINE, concurrency)] = baseline
            peak_mib = faasd.memory_kib()["VmHWM"] / 1024
            if "fork" in modes:
                template_kib, child_kib = fork_memory(faasd, image, options.held)
        print_table(results, options.requests, options.gap)
        print(f"daemon peak RSS over every row: {peak_mib:.1f} MiB (cpu ms/req: the daemon process alone)")
        if "fork" in modes:
            print(
                f"fork mode memory (PSS): template {template_kib / 1024:.1f} MiB, "
                f"each of {options.held} connections held open {child_kib / 1024:.2f} MiB"
            )
        report_deploys(image, options.cache, workdir / "deploys")


def measure_mode(
    faasd: BenchDaemon, image: Path, mode: str, flags: tuple[str, ...], requests: int, concurrency: int, gap: float
) -> dict[str, float]:
    """One row of faasd in ``mode``, deployed for it alone and removed after: no other pool runs beside it."""
    address, _ = faasd.deploy(mode, image, *flags)
    run_load(address, 1, 1, 0)  # a fork-mode template is up
    templates = template_pids(mode) if "fork" in flags else []
    before, tree = faasd.cpu_seconds(), tree_cpu_seconds(faasd.pid)
    template_cpu = sum(tree_cpu_seconds(pid) for pid in templates)
    samples, wall, busy = measure(address, requests, concurrency, gap)
    row = describe(samples, wall)
    template_cpu = sum(tree_cpu_seconds(pid) for pid in templates) - template_cpu
    row["cpu_ms"] = per_request_ms(faasd.cpu_seconds() - before, len(samples) + concurrency)  # the warm-up's too
    row["machine_ms"] = per_request_ms(busy, len(samples) + concurrency)
    row["own_ms"] = per_request_ms(tree_cpu_seconds(faasd.pid) - tree + template_cpu, len(samples) + concurrency)
    faasd.remove(mode)
    return row


def pss_kib(pid: int) -> int | None:
    """A process's proportional set size (its private pages plus its share of shared ones);
    None once it has exited."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("Pss:")), None)


def processes_in_cgroups(prefix: str) -> dict[int, str]:
    """Every process whose cgroup (any hierarchy) is ``/faasd/<prefix>...`` (a container's) or
    ``/faasd/daemon.<digest>/<prefix>...`` (a fork-mode connection's), with the memory
    controller's cgroup of it (v2: the one cgroup)."""
    pattern = re.compile(rf"/faasd/(daemon\.[0-9a-f]+/)?{re.escape(prefix)}")
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines = [line.split(":", 2) for line in (entry / "cgroup").read_text().splitlines()]
            except OSError:
                continue
            if any(pattern.match(path) for _, _, path in lines):
                by_controllers = {controllers: path for _, controllers, path in lines}
                found[int(entry.name)] = by_controllers.get("memory", by_controllers.get("", ""))
    return found


def template_pids(function: str) -> list[int]:
    """The host pids of ``function``'s fork-mode templates (each container's pid 1 and its template
    process): its processes whose memory is charged to the container, not to a connection."""
    found = processes_in_cgroups(f"{function}-")
    return [pid for pid, memory in found.items() if memory.startswith(f"/faasd/{function}-")]


def fork_memory(faasd: BenchDaemon, image: Path, held: int) -> tuple[int, int]:
    """The PSS of a fork-mode template, and per connection of ``held`` its children hold at once."""
    name = "forkmem"
    address, _ = faasd.deploy(name, image, "--sandbox", "fork")
    run_load(address, 1, 1, 0)  # the template is up
    template = set(template_pids(name))
    sockets = [socket.create_connection(address) for _ in range(held)]
    try:
        for sock in sockets:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # the head is not over: each child waits for the rest
        time.sleep(2)
        children = set(processes_in_cgroups(f"{name}-")) - template  # the held ones, and any warm ones
        template_kib = sum(pss_kib(pid) or 0 for pid in template)
        sizes = [size for size in map(pss_kib, children) if size is not None]
        child_kib = sum(sizes) // max(len(sizes), 1)
    finally:
        for sock in sockets:
            sock.close()
        faasd.remove(name)
    return template_kib, child_kib


if __name__ == "__main__":
    main()
