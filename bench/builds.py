"""Deploy time of a source function with dependencies, beside the same function without, in one run.

On the python runtime (Debian's python3 and pip): ``faas new --runtime python --code DIR`` end to
end, the runtime already added, each deploy bringing new code (so each one is checked, and built,
anew). Without dependencies: a handler alone. With: the same handler and a requirements.txt
naming one small pure-Python wheel that needs a second, installed by pip in a one-shot container
from the daemon's ``--packages`` directory. Rows interleaved, so the host's drift touches both;
p50, p99 and the ratio with/without at p50. As root:

    sudo .venv/bin/python -m bench.builds [--deploys 10] [--cache DIR]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser
from bench.speed import percentile
from tools.build_image import build_runtime_image
from tools.packages import write_wheel

HANDLER = "import faasmath\n\n\ndef handler(event, context):\n    return faasmath.double(event.get('x', 1))\n"
PLAIN = "def handler(event, context):\n    return 2 * event.get('x', 1)\n"


def figures(values: list[float]) -> str:
    p50, p99 = statistics.median(values) * 1000, percentile(values, 99) * 1000
    return f"p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  n={len(values)}"


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    options = parser.parse_args()
    options.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=options.cache) as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        runtime_image = work / "runtime.tar"
        build_runtime_image(runtime_image, "python", options.cache)
        packages = work / "packages"
        packages.mkdir(mode=0o755)
        write_wheel(packages, "faasgreet", "1.0", {"faasgreet/__init__.py": b"def greet(n):\n    return n\n"})
        math = b"from faasgreet import greet\n\ndef double(x):\n    return greet(2 * x)\n"
        write_wheel(packages, "faasmath", "2.0", {"faasmath/__init__.py": math}, requires="faasgreet")
        for path in packages.iterdir():
            path.chmod(0o644)
        plain, with_deps = work / "plain", work / "deps"
        for directory in (plain, with_deps):
            directory.mkdir()
        (with_deps / "requirements.txt").write_text("faasmath==2.0\n")
        with BenchDaemon(work / "daemon", "--packages", str(packages)) as daemon:
            daemon.faas("runtime", "add", "python", "-f", str(runtime_image))
            times: dict[str, list[float]] = {"plain": [], "deps": []}
            for n in range(options.deploys):
                (plain / "handler.py").write_text(PLAIN + f"# deploy {n}\n")
                (with_deps / "handler.py").write_text(HANDLER + f"# deploy {n}\n")
                for name, directory in (("plain", plain), ("deps", with_deps)):
                    started = time.perf_counter()
                    daemon.faas("new", name, "--runtime", "python", "--code", str(directory), "--entry", "handler.py")
                    times[name].append(time.perf_counter() - started)

    print(f"bench.builds: {options.deploys} deploys from source per row, the runtime already added")
    print(f"  python, no dependencies               {figures(times['plain'])}")
    ratio = statistics.median(times["deps"]) / statistics.median(times["plain"])
    print(f"  python, requirements.txt (2 wheels)   {figures(times['deps'])}  ratio with/without p50 {ratio:.2f}")


if __name__ == "__main__":
    main()
