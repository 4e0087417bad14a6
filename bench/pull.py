"""Pulling the example image from a loopback registry: faas new --pull against podman pull.

The example Python image (about 120 MB: a Debian + python3 base layer and an app layer) and a
second image on the same base (handlers/plain) are pushed with skopeo to Debian's
docker-registry on loopback (htpasswd basic auth). Each round, in this order:

- ``podman pull`` of the example image into an empty storage root (overlay driver): download
  and unpack, what a container user would run instead;
- ``faas new --pull`` of the example image on a faasd whose layer store is empty (its functions
  were removed, and their layers with them), end to end: resolve, fetch (layers concurrently,
  each hashed as it arrives), import, mount, listen;
- ``faas new --pull`` of the second image, whose base layer faasd now holds and does not fetch;
- ``faas list``: what any faas command costs (starting Python, the request), subtracted from
  the second pull to give what the pull itself costs beyond it.

Prints each round and the medians, with the ratios first / podman and (second - list) /
(first - list):

    sudo .venv/bin/python -m bench.pull [--rounds 5] [--cache /var/cache/faasd-tests]
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser, example_image
from tools.build_image import HANDLERS, build_python_image
from tools.local_registry import PASSWORD, USER, LocalRegistry, start_registry


def podman_pull(reference: str, root: Path) -> float:
    """``podman pull`` into an empty storage root; seconds."""
    shutil.rmtree(root, ignore_errors=True)
    argv = [
        "podman",
        "--root", str(root / "storage"),
        "--runroot", str(root / "run"),
        "--storage-driver", "overlay",
        "pull", "--quiet", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}",
        reference,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(root, ignore_errors=True)
    return seconds


def fetch_seconds(log: Path, function: str) -> float:
    """The last fetch of ``function``'s layers, as the daemon logged it."""
    found = re.findall(rf"image pulled function={function} .* seconds=([0-9.]+)", log.read_text())
    assert found, f"no pull of {function} in {log}"
    return float(found[-1])


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the four measurements")
    options = parser.parse_args()
    with example_image(options.cache) as first_image:
        workdir = first_image.parent
        second_image = workdir / "plain.tar"
        build_python_image(second_image, cache_dir=options.cache, app_dir=HANDLERS / "plain")
        registry = start_registry(workdir / "registry")
        try:
            run(registry, first_image, second_image, workdir, options.rounds)
        finally:
            registry.stop()


def run(registry: LocalRegistry, first_image: Path, second_image: Path, workdir: Path, rounds: int) -> None:
    first = registry.push_archive(first_image, "bench/hello", "1")
    second = registry.push_archive(second_image, "bench/plain", "1")
    rows: list[tuple[float, float, float, float, float]] = []
    with BenchDaemon(workdir / "faasd", "--insecure-registry", registry.host) as faasd:
        faasd.faas("login", registry.host, "-u", USER, "--password-stdin", input=PASSWORD.encode())
        print(f"image: {first_image.stat().st_size / 1e6:.0f} MB docker-save archive; registry {registry.host}")
        print("round  podman pull  faas first  (fetch)  faas second  faas list")
        for number in range(1, rounds + 1):
            podman = podman_pull(first, Path(tempfile.mkdtemp(prefix="podman-", dir=workdir)))
            pulled_first = faasd.faas("new", "first", "--pull", first)
            fetched = fetch_seconds(workdir / "faasd" / "faasd.log", "first")
            pulled_second = faasd.faas("new", "second", "--pull", second)
            listed = faasd.faas("list")
            rows.append((podman, pulled_first, fetched, pulled_second, listed))
            print(
                f"{number:5}  {podman:9.2f} s  {pulled_first:8.2f} s  {fetched:5.2f} s  "
                f"{pulled_second:9.2f} s  {listed:7.2f} s"
            )
            faasd.remove("first")
            faasd.remove("second")  # the layer store is empty again
    podman, pulled_first, fetched, pulled_second, listed = (
        statistics.median(column) for column in zip(*rows, strict=True)
    )
    print(
        f"median: podman pull {podman:.2f} s, faas new --pull {pulled_first:.2f} s (of which fetching "
        f"{fetched:.2f} s): ratio {pulled_first / podman:.2f} (target <= 1.0)"
    )
    beyond_first, beyond_second = pulled_first - listed, pulled_second - listed
    print(
        f"second function on the same base: {pulled_second:.2f} s, {beyond_second:.3f} s beyond faas list "
        f"({listed:.2f} s) against {beyond_first:.3f} s for the first: ratio {beyond_second / beyond_first:.3f} "
        "(target <= 0.1)"
    )


if __name__ == "__main__":
    main()
