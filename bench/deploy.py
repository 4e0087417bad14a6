"""Deploy time and the daemon's memory while importing a large image.

The upload is streamed to disk and layers are unpacked as streams, so the daemon's peak RSS
should stay flat however large the image is. This prints it for the example image (a ~120 MB
Debian + python3 base plus the app layer) beside the RSS of the idle daemon:

    sudo .venv/bin/python -m bench.deploy [--cache /var/cache/faasd-tests]
"""

from __future__ import annotations

from bench.daemon import BenchDaemon, bench_parser, example_image


def main() -> None:
    options = bench_parser(__doc__).parse_args()
    with example_image(options.cache) as image:
        workdir = image.parent
        size_mb = image.stat().st_size / 1e6
        with BenchDaemon(workdir / "faasd") as faasd:
            idle = faasd.memory_kib()
            _, first = faasd.deploy("first", image)
            _, second = faasd.deploy("second", image)
            after = faasd.memory_kib()
    print(f"image: {size_mb:.0f} MB docker-save archive")
    print(f"deploy time: first {first:.2f} s, second {second:.2f} s (ratio {second / first:.2f})")
    print(
        f"daemon RSS: idle {idle['VmRSS'] / 1024:.1f} MiB, after two deploys {after['VmRSS'] / 1024:.1f} MiB, "
        f"peak {after['VmHWM'] / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
