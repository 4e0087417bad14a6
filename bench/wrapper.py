"""What a handler process costs before it can take a connection, and per connection: the image
function's plain handler (``bench.source``'s) beside the Python runtime's wrapper serving the
same handler from source, both run by this host's python3 outside any container.

Each start is a process that connects to a control socket of its own; this side then hands it a
TCP connection over ``SCM_RIGHTS`` as faasd does, sends one GET and reads to the end. Reported,
p50 and min over ``--runs`` starts per side, alternated: the time until the handler waits on its
control socket, its CPU (user + system of the whole process, from ``wait4``), and connect→last
byte once it waits (the warm path without the daemon). No root needed:

    .venv/bin/python -m bench.wrapper [--runs 60]
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.source import HANDLER, IMAGE_APP

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
SETTLE_SECONDS = 0.03  # between the handler's connect and the hand-over: it waits, as a warm one does


def lay_out(work: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The two handlers as their images hold them, compiled as faasd and ``faas build`` compile
    them; the command and environment of each."""
    app, runtime, code = work / "app", work / "runtime", work / "code"
    for directory in (app, runtime, code):
        directory.mkdir()
    (app / "app.py").write_text(IMAGE_APP)
    shutil.copy(HANDLERS / "faas_handler.py", app)
    py_compile.compile(str(app / "faas_handler.py"), doraise=True)
    for name in ("main.py", "runtime.py"):
        shutil.copy(HANDLERS / "runtimes" / "python" / name, runtime)
    shutil.copy(HANDLERS / "faas_handler.py", runtime)
    subprocess.run(["python3", str(runtime / "runtime.py"), "--compile", str(runtime)], check=True, capture_output=True)
    (code / "add.py").write_text(HANDLER)
    source_env = {"PYTHONPATH": str(runtime), "FAAS_CODE_DIR": str(code), "FAAS_ENTRY": "add.py"}
    image = ["python3", str(app / "app.py")]
    return {"image": (image, {}), "source": (["python3", str(runtime / "main.py")], source_env)}


def one(argv: list[str], env: dict[str, str], control: Path, listener: socket.socket) -> tuple[float, float, float]:
    """Seconds until the handler waits, its CPU seconds, and connect→last byte of one request."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(control))
    server.listen(1)
    base = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "FAAS_CONTROL_SOCKET": str(control)}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=base | env, stderr=subprocess.DEVNULL)
    handler, _ = server.accept()
    ready = time.perf_counter() - started
    time.sleep(SETTLE_SECONDS)
    began = time.perf_counter()
    client = socket.create_connection(listener.getsockname())
    accepted, peer = listener.accept()
    metadata = {"v": 1, "id": "bench", "function": "f", "version": 1, "deadline": int(time.time() * 1000) + 30_000}
    metadata["peer"] = f"{peer[0]}:{peer[1]}"
    socket.send_fds(handler, [json.dumps(metadata).encode()], [accepted.fileno()])
    for sock in (accepted, handler, server):
        sock.close()
    client.sendall(REQUEST)
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    served = time.perf_counter() - began
    client.close()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    control.unlink()
    if not answer.startswith(b"HTTP/1.1 200"):
        sys.exit(f"bench.wrapper: {argv[1]} answered {answer[:80]!r}")
    return ready, usage.ru_utime + usage.ru_stime, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    options = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"image": [], "source": []}
    with tempfile.TemporaryDirectory(prefix="faasd-bench-") as tmp, socket.socket() as listener:
        sides = lay_out(Path(tmp))
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        for _ in range(options.runs):
            for side, (argv, env) in sides.items():  # alternated: drift touches both alike
                results[side].append(one(argv, env, Path(tmp) / "control.sock", listener))
    print(f"bench.wrapper: {options.runs} starts per side, {sys.version.split()[0]} on the host, ms p50 (min)")
    columns = ("until waiting", "cpu", "request")
    for side, rows in results.items():
        cells = []
        for index, column in enumerate(columns):
            values = [row[index] * 1000 for row in rows]
            ratio = statistics.median(values) / statistics.median(row[index] * 1000 for row in results["image"])
            cells.append(f"{column} {statistics.median(values):6.2f} ({min(values):6.2f}) {ratio:4.2f}×")
        print(f"  {side:6}  " + "   ".join(cells))


if __name__ == "__main__":
    main()
