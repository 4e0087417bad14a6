"""What one container start costs under faasd's config.json and under cheaper variants of it.

The cold path runs ``runc run`` once per connection, so every mount, namespace and filter in
``sandbox.spec`` is paid per connection. This runs ``/bin/true`` from the example image's rootfs
(as faasd deployed it: layers owned by the shifted ids) under each variant in turn, ``--runs``
times interleaved, and prints wall time (p50, p90) and the CPU time runc and the container used
(per start), beside ``runc spec``'s defaults. Variants marked "weaker" give up isolation and are
measured only to show what that isolation costs. As root:

    sudo .venv/bin/python -m bench.runc_cost [--runs 40]
"""

from __future__ import annotations

import copy
import json
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import netns

from bench.daemon import BenchDaemon, bench_parser, example_image
from bench.speed import runc_spec_defaults
from faasd.config import Config
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.sandbox.spec import build_spec

COMMAND = ["/bin/true"]
SHARED_NETNS = "faasd-bench-runc-cost"

Spec = dict[str, Any]


def without_mounts(*destinations: str) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in destinations]

    return change


def without_seccomp(spec: Spec) -> None:
    del spec["linux"]["seccomp"]


def without_proc_masks(spec: Spec) -> None:
    spec["linux"]["maskedPaths"] = []
    spec["linux"]["readonlyPaths"] = []


def joining_a_network_namespace_made_once(spec: Spec) -> None:
    # sysfs can only be mounted by the network namespace's owner, which a container's user
    # namespace is not when it joins one the host made.
    without_mounts("/sys")(spec)
    for namespace in spec["linux"]["namespaces"]:
        if namespace["type"] == "network":
            namespace["path"] = f"/var/run/netns/{SHARED_NETNS}"


def only_mount_pid_network_user_namespaces(spec: Spec) -> None:
    kept = {"mount", "pid", "network", "user"}
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] in kept]
    del spec["hostname"]  # needs a UTS namespace of its own


# Each variant: (name, change to faasd's spec, whether it gives up isolation).
VARIANTS: list[tuple[str, Callable[[Spec], None], bool]] = [
    ("faasd", lambda spec: None, False),
    ("no /sys, /dev/pts, /dev/shm", without_mounts("/sys", "/dev/pts", "/dev/shm"), False),
    ("no seccomp filter", without_seccomp, True),
    ("no masked /proc paths", without_proc_masks, True),
    ("net ns made once, no /sys", joining_a_network_namespace_made_once, True),
    ("only mount+pid+net+user ns", only_mount_pid_network_user_namespaces, True),
]


def faasd_spec(rootfs: Path) -> Spec:
    """The config.json the daemon writes for a container of the example image, running ``true``."""
    image = ImageConfig(entrypoint=(), cmd=tuple(COMMAND), env=(), working_dir="/app", user="")
    spec = build_spec(image, 0, 0, Limits(), rootfs, "bench", Config().userns_base, "bench")
    spec["mounts"] = [m for m in spec["mounts"] if m["type"] != "bind"]  # no control socket: nothing connects
    return spec


def run_once(spec: Spec, bundle: Path, runc_root: Path, container_id: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``runc run``: runc, its init and the container, to their exit."""
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir()
    spec = copy.deepcopy(spec)
    spec["linux"]["cgroupsPath"] = f"/faasd-bench/{container_id}"
    (bundle / "config.json").write_text(json.dumps(spec))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    argv = ["runc", "--root", str(runc_root), "run", "--bundle", str(bundle), container_id]
    finished = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"runc run failed: {finished.stderr.strip()}")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def remove_cgroup_parents() -> None:
    """runc removes each container's cgroup, not the parent the benchmark named for them."""
    for parent in Path("/sys/fs/cgroup").glob("*/faasd-bench"):
        parent.rmdir()


def measure(specs: dict[str, Spec], workdir: Path, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Run every spec ``runs`` times, one of each in turn, so drift on the host hits all alike."""
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in specs}
    for run in range(runs):
        for index, (name, spec) in enumerate(specs.items()):
            wall, cpu = run_once(spec, workdir / "bundle", workdir / "runc", f"c{run}-{index}")
            results[name][0].append(wall)
            results[name][1].append(cpu)
    return results


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=40, help="starts per variant")
    options = parser.parse_args()
    with example_image(options.cache) as image:
        workdir = image.parent
        with BenchDaemon(workdir / "faasd") as faasd:
            faasd.deploy("example", image, "--warm", "0")
            ours = faasd_spec(faasd.rootfs("example"))
            specs = {"runc spec defaults": runc_spec_defaults(workdir, faasd.rootfs("example"), COMMAND, [])}
            weaker = set()
            for name, change, gives_up_isolation in VARIANTS:
                specs[name] = copy.deepcopy(ours)
                change(specs[name])
                if gives_up_isolation:
                    weaker.add(name)
            netns.create(SHARED_NETNS)
            try:
                results = measure(specs, workdir, options.runs)
            finally:
                netns.remove(SHARED_NETNS)
                remove_cgroup_parents()
    reference = statistics.median(results["faasd"][1])
    print(f"runc run {' '.join(COMMAND)}, {options.runs} starts per variant, interleaved; ms per start")
    print(f"{'config.json':<32}{'wall p50':>9}{'p90':>7}{'cpu p50':>9}{'cpu vs faasd':>14}")
    for name, (walls, cpus) in results.items():
        wall_ms = [w * 1000 for w in walls]
        cpu = statistics.median(cpus)
        note = "  (weaker)" if name in weaker else ""
        print(
            f"{name:<32}{statistics.median(wall_ms):>9.1f}{statistics.quantiles(wall_ms, n=10)[8]:>7.1f}"
            f"{cpu * 1000:>9.1f}{cpu / reference:>13.2f}x{note}"
        )


if __name__ == "__main__":
    main()
