"""Deploy time of source functions that are built (dependencies, TypeScript), beside the same
functions that are not, in one run.

``faas new --runtime R --code DIR`` end to end, the runtimes already added, each deploy bringing
new code (so each one is checked, and built, anew). On python (Debian's python3 and pip): a
handler alone, then with a requirements.txt naming one small pure-Python wheel that needs a
second, installed by pip in a one-shot container from the daemon's ``--packages`` directory. On
node (Debian's nodejs, npm, node-typescript): a handler in JavaScript alone, then with a
package.json naming one npm tarball that needs a second, then the handler in TypeScript (no
dependencies). Rows interleaved, so the host's drift touches all; p50, p99 and the ratio to the
runtime's unbuilt row at p50. As root:

    sudo .venv/bin/python -m bench.builds [--deploys 10] [--cache DIR]
"""

from __future__ import annotations

import statistics
import time

from bench.daemon import BenchDaemon, bench_parser, work_dir
from bench.speed import percentile
from tools.build_image import build_runtime_image
from tools.packages import write_npm_tarball, write_wheel

HANDLER = "import faasmath\n\n\ndef handler(event, context):\n    return faasmath.double(event.get('x', 1))\n"
PLAIN = "def handler(event, context):\n    return 2 * event.get('x', 1)\n"
JS = "module.exports = (event) => 2 * (event.x || 1);\n"
JS_DEPS = 'const left = require("faasleft");\nmodule.exports = (event) => left(String(event.x || 1));\n'
TS = "export default (event: { x?: number }): number => 2 * (event.x ?? 1);\n"
# The rows: name, runtime, files (the entry first), the row each one is compared with.
ROWS = {
    "python": ("python", {"handler.py": PLAIN}, "python"),
    "python + requirements.txt (2 wheels)": (
        "python",
        {"handler.py": HANDLER, "requirements.txt": "faasmath==2.0\n"},
        "python",
    ),
    "node": ("node", {"index.js": JS}, "node"),
    "node + package.json (2 tarballs)": (
        "node",
        {"index.js": JS_DEPS, "package.json": '{"dependencies": {"faasleft": "^1.0.0"}}'},
        "node",
    ),
    "node, TypeScript": ("node", {"index.ts": TS}, "node"),
}


def figures(values: list[float]) -> str:
    p50, p99 = statistics.median(values) * 1000, percentile(values, 99) * 1000
    return f"p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  n={len(values)}"


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    options = parser.parse_args()
    with work_dir() as work:
        packages = work / "packages"
        packages.mkdir()
        packages.chmod(0o755)  # containers read it as unprivileged users
        write_wheel(packages, "faasgreet", "1.0", {"faasgreet/__init__.py": b"def greet(n):\n    return n\n"})
        math = b"from faasgreet import greet\n\ndef double(x):\n    return greet(2 * x)\n"
        write_wheel(packages, "faasmath", "2.0", {"faasmath/__init__.py": math}, requires="faasgreet")
        left = {"name": "faasleft", "version": "1.0.0", "dependencies": {"faaspad": "^1.0.0"}}
        write_npm_tarball(packages, left, {"index.js": b'module.exports = (s) => require("faaspad")(s, 8);\n'})
        pad = b"module.exports = (s, n) => s.padStart(n);\n"
        write_npm_tarball(packages, {"name": "faaspad", "version": "1.2.0"}, {"index.js": pad})
        for path in packages.iterdir():
            path.chmod(0o644)
        with BenchDaemon(work / "daemon", "--packages", str(packages)) as daemon:
            for language in ("python", "node"):
                runtime = work / f"{language}.tar"
                build_runtime_image(runtime, language, options.cache)
                daemon.faas("runtime", "add", language, "-f", str(runtime))
            times: dict[str, list[float]] = {row: [] for row in ROWS}
            for n in range(options.deploys):
                for number, (row, (runtime, files, _)) in enumerate(ROWS.items()):
                    code = work / f"row{number}"
                    code.mkdir(exist_ok=True)
                    for name, text in files.items():
                        (code / name).write_text(text)
                    entry = next(iter(files))  # new code each time: a comment that counts the deploys
                    (code / entry).write_text(files[entry] + ("// " if runtime == "node" else "# ") + f"deploy {n}\n")
                    started = time.perf_counter()
                    daemon.faas("new", f"row{number}", "--runtime", runtime, "--code", str(code), "--entry", entry)
                    times[row].append(time.perf_counter() - started)

    print(f"bench.builds: {options.deploys} deploys from source per row, the runtimes already added")
    for row, (_, _, baseline) in ROWS.items():
        ratio = statistics.median(times[row]) / statistics.median(times[baseline])
        print(f"  {row:38} {figures(times[row])}  ratio to {baseline} p50 {ratio:.2f}")


if __name__ == "__main__":
    main()
