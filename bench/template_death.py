"""What a template's death costs the connections in flight (fork mode), in one run.

One fork-mode function whose handler works ``--work`` seconds per request; ``--concurrency``
clients send requests back to back for ``--seconds`` per phase, so that children are serving
whenever something is killed. Three phases, in one daemon:

    none       nothing is killed: the baseline
    template   the template process is killed (SIGKILL) every ``--every`` seconds, as when its
               app crashes: its children serve on under the container's pid 1
    container  the template container's pid 1 is killed instead: every process of its pid
               namespace dies with it, as every template death did while the template was pid 1

For each: requests, those that failed (not a 200: a reset, a 502), kills, failures per kill, and
the p50 and p99 of connect→last byte. As root:

    sudo .venv/bin/python -m bench.template_death [--seconds 20] [--every 2] [--concurrency 8] [--work 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser, work_dir
from bench.speed import Sample, one_request, percentile
from faas_cli.imagebuild import build_python_image

APP = """import time

from faas_handler import serve


def handle(request):
    time.sleep({work})
    return "ok"


serve(handle)
"""
PHASES = ("none", "template", "container")


def newest_template(runc_root: Path, function: str) -> int | None:
    """The host pid of pid 1 in the newest running container of ``function`` (its current template)."""
    listed = subprocess.run(["runc", "--root", str(runc_root), "list", "--format", "json"], capture_output=True)
    found = [c for c in json.loads(listed.stdout or b"null") or [] if c["id"].startswith(f"{function}-")]
    running = sorted((c["created"], c["pid"]) for c in found if c["status"] == "running")
    return running[-1][1] if running else None


def kill(runc_root: Path, function: str, phase: str) -> bool:
    """Kill the current template's process (its pid 1's one child) or its pid 1; True if one was."""
    init = newest_template(runc_root, function)
    if init is None:
        return False
    target = init
    if phase == "template":
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        if len(children) != 1:  # not a template of this SDK's, or its process is already gone
            return False
        target = int(children[0])
    try:
        os.kill(target, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def run_phase(
    address: tuple[str, int], runc_root: Path, function: str, phase: str, options: argparse.Namespace
) -> tuple[list[Sample], int]:
    """Load for the phase's seconds, killing as the phase says; the samples and the kills."""
    every = options.every
    end = time.monotonic() + options.seconds
    samples: list[Sample] = []

    def client() -> None:
        while time.monotonic() < end:
            samples.append(one_request(address))

    clients = [threading.Thread(target=client) for _ in range(options.concurrency)]
    for thread in clients:
        thread.start()
    kills = 0
    time.sleep(every / 2)
    while phase != "none" and time.monotonic() < end - every / 2:
        kills += kill(runc_root, function, phase)
        time.sleep(every)
    for thread in clients:
        thread.join()
    return samples, kills


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--work", type=float, default=0.2)
    options = parser.parse_args()
    with work_dir() as work:
        (work / "app").mkdir()
        (work / "app" / "app.py").write_text(APP.format(work=options.work))
        image = work / "slow.tar"
        build_python_image(image, options.cache, work / "app")
        results = {}
        with BenchDaemon(work / "daemon") as daemon:
            address, _ = daemon.deploy("slow", image, "--sandbox", "fork")
            for phase in PHASES:
                one_request(address)  # a template of its own, ready
                results[phase] = run_phase(address, work / "daemon" / "run" / "runc", "slow", phase, options)
    print(
        f"bench.template_death: fork mode, {options.concurrency} clients back to back, {options.work} s of work a "
        f"request, {options.seconds:g} s a phase, a kill every {options.every:g} s"
    )
    for phase, (samples, kills) in results.items():
        failed = sum(not sample.ok for sample in samples)
        times = [sample.last_byte for sample in samples if sample.ok]
        per_kill = f"{failed / kills:5.2f}" if kills else "    -"
        print(
            f"  {phase:9}  requests {len(samples):5}  failed {failed:4}  kills {kills:3}  failed/kill {per_kill}  "
            f"p50 {statistics.median(times) * 1000:7.1f} ms  p99 {percentile(times, 99) * 1000:7.1f} ms"
        )


if __name__ == "__main__":
    main()
