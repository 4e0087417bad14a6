"""Deploy time of a first and a second function on the same base, the disk they take, and the
daemon's memory while importing.

Two example images share the Debian + python3 base layer and differ in their app layer
(handlers/hello and handlers/plain). The first deploy sends and unpacks the base into the layer
store; the second sends and unpacks only its own app layer (faas leaves out the layers faasd
holds). The upload is streamed to disk and layers are unpacked as streams, so the daemon's peak
RSS should stay flat however large the image is:

    sudo .venv/bin/python -m bench.deploy [--cache /var/cache/faasd-tests]
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser, example_image
from tools.build_image import HANDLERS, build_python_image


def disk_use_mb(path: Path) -> float:
    """What ``du -x`` counts under ``path``: each inode once, and not the mounted rootfs, which
    would count every layer again for each version that uses it."""
    argv = ["du", "-s", "-x", "--block-size=1", str(path)]
    output = subprocess.run(argv, check=True, capture_output=True, text=True)
    return int(output.stdout.split()[0]) / 1e6


def import_seconds(log: Path, function: str) -> float:
    """How long the daemon took to import ``function``'s image, upload excluded (from its log)."""
    found = re.search(rf"image imported function={function} .* seconds=([0-9.]+)", log.read_text())
    assert found is not None, f"no import of {function} in {log}"
    return float(found[1])


def upload_bytes(log: Path, function: str) -> int:
    """How many bytes of ``function``'s upload reached the daemon (from its log)."""
    found = re.search(rf"upload received function={function} bytes=([0-9]+)", log.read_text())
    assert found is not None, f"no upload of {function} in {log}"
    return int(found[1])


def main() -> None:
    options = bench_parser(__doc__).parse_args()
    with example_image(options.cache) as first_image:
        report_deploys(first_image, options.cache, first_image.parent / "faasd")


def report_deploys(first_image: Path, cache: Path, daemon_dir: Path) -> None:
    """Deploy ``first_image`` and a second image on its base to a new faasd; print the figures."""
    workdir = first_image.parent
    second_image = workdir / "plain.tar"
    build_python_image(second_image, cache_dir=cache, app_dir=HANDLERS / "plain")
    size_mb = first_image.stat().st_size / 1e6
    with BenchDaemon(daemon_dir) as faasd:
        idle = faasd.memory_kib()
        _, first = faasd.deploy("first", first_image)
        _, second = faasd.deploy("second", second_image)
        after = faasd.memory_kib()
        state_mb = disk_use_mb(daemon_dir / "state")
        layers_mb = disk_use_mb(daemon_dir / "state" / "layers")
    first_import, second_import = (import_seconds(daemon_dir / "faasd.log", f) for f in ("first", "second"))
    first_upload, second_upload = (upload_bytes(daemon_dir / "faasd.log", f) for f in ("first", "second"))
    print(f"images: {size_mb:.0f} MB docker-save archive each, one base layer in common")
    print(
        f"deploy time (faas new, upload included): first {first:.2f} s, second {second:.2f} s "
        f"(ratio {second / first:.3f})"
    )
    print(f"upload (bytes faasd received): first {first_upload / 1e6:.1f} MB, second {second_upload / 1e3:.1f} kB")
    print(
        f"import time (in the daemon, once uploaded): first {first_import:.3f} s, second {second_import:.3f} s "
        f"(ratio {second_import / first_import:.3f})"
    )
    print(f"disk: state dir {state_mb:.0f} MB after two deploys (layers {layers_mb:.0f} MB)")
    print(
        f"daemon RSS: idle {idle['VmRSS'] / 1024:.1f} MiB, after two deploys {after['VmRSS'] / 1024:.1f} MiB, "
        f"peak {after['VmHWM'] / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
