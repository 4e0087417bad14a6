"""JavaScript functions from source beside Python ones, in one run.

The same function (a small JSON answer) from source on Debian's nodejs and on Debian's python3:
warm (the default pool) and cold (``--warm 0``), connect→last byte p50 and p99 over
``--requests`` sequential requests one every ``--gap`` seconds, rows interleaved so the host's
drift touches both alike; the ratio node/python at p50. A node container takes its connection
on Node's IPC channel (fd 3), a python one on ``/control.sock``. Then the deploy time of a node
function without dependencies (``faas new`` end to end, new code each time) and the delay from
an async generator's ``yield`` to the client's read of its event. As root:

    sudo .venv/bin/python -m bench.node [--requests 200] [--gap 0.05] [--cache DIR]
"""

from __future__ import annotations

import statistics

from bench.daemon import BenchDaemon, bench_parser, work_dir
from bench.source import HANDLER, figures, latencies, stream_delays
from tools.build_image import build_runtime_image

JS_HANDLER = "module.exports = (event, context) => ({ sum: (event.a || 0) + (event.b || 0) });\n"
JS_STREAM = "module.exports = async function* (event, context) {\n  yield { t: Date.now() / 1000 };\n};\n"
MODES = {"warm": (), "cold": ("--warm", "0")}
CODE = {"python": ("add.py", HANDLER), "node": ("add.js", JS_HANDLER)}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05)
    options = parser.parse_args()
    with work_dir() as work:
        with BenchDaemon(work / "daemon") as daemon:
            for language in CODE:
                build_runtime_image(work / f"{language}.tar", language, options.cache)
                daemon.faas("runtime", "add", language, "-f", str(work / f"{language}.tar"))
            addresses = {}
            for language, (name, code) in CODE.items():
                (work / name).write_text(code)
                for mode, flags in MODES.items():
                    function = f"{language}-{mode}"
                    daemon.faas("new", function, "--runtime", language, "--code", str(work / name), *flags)
                    addresses[language, mode] = (daemon.ip(function), 80)
            for address in addresses.values():
                latencies(address, 5, options.gap)  # the first container of each, and its pool
            results: dict[tuple[str, str], list[float]] = {key: [] for key in addresses}
            rounds = 4
            for _ in range(rounds):  # interleaved: drift touches both sides alike
                for key, address in addresses.items():
                    results[key] += latencies(address, options.requests // rounds, options.gap)

            deploys = []
            for n in range(10):
                (work / "add.js").write_text(JS_HANDLER + f"// deploy {n}\n")
                deploys.append(daemon.faas("new", "deployed", "--runtime", "node", "--code", str(work / "add.js")))

            (work / "stream.js").write_text(JS_STREAM)
            daemon.faas("new", "stream", "--runtime", "node", "--code", str(work / "stream.js"))
            delays = stream_delays(daemon.ip("stream"), 50, options.gap)

    print(f"bench.node: {options.requests} sequential requests per row, one every {options.gap} s")
    for mode in MODES:
        python_p50 = statistics.median(results["python", mode])
        node_p50 = statistics.median(results["node", mode])
        print(f"  {mode:5} python  {figures(results['python', mode])}")
        print(f"  {mode:5} node    {figures(results['node', mode])}  ratio node/python p50 {node_p50 / python_p50:.2f}")
    print(f"  deploy of a node function, no dependencies (faas new end to end)  {figures(deploys)}")
    print(f"  SSE yield -> client read (node)                                   {figures(delays)}")


if __name__ == "__main__":
    main()
