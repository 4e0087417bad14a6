"""A real faasd on temp dirs, for benchmarks: start, deploy, read its memory, stop."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tools.build_image import build_python_image

BENCH_RANGE = os.environ.get("FAAS_BENCH_RANGE", "127.79.0.0/24")


class BenchDaemon:
    """Context manager around one faasd process with its own state and run dirs."""

    def __init__(self, workdir: Path, *options: str) -> None:
        self._workdir = workdir
        bin_dir = Path(sys.executable).parent
        self._command = [
            str(bin_dir / "faasd"),
            "--state-dir", str(workdir / "state"),
            "--run-dir", str(workdir / "run"),
            "--ip-range", BENCH_RANGE,
            *options,
        ]  # fmt: skip
        self._faas = [str(bin_dir / "faas"), "--socket", str(workdir / "run" / "faasd.sock")]

    def __enter__(self) -> BenchDaemon:
        self._workdir.mkdir(parents=True, exist_ok=True)
        with open(self._workdir / "faasd.log", "wb") as log:
            self._proc = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if subprocess.run([*self._faas, "list"], capture_output=True).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"faasd did not start: see {self._workdir / 'faasd.log'}")

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=60)

    def deploy(self, name: str, image: Path, *options: str) -> tuple[tuple[str, int], float]:
        """Deploy ``image`` as ``name`` with ``faas new`` ``options``; return its address and how
        long the deploy took."""
        started = time.perf_counter()
        subprocess.run([*self._faas, "new", name, "-f", str(image), *options], check=True, capture_output=True)
        seconds = time.perf_counter() - started
        ip = subprocess.run([*self._faas, "ip", name], check=True, capture_output=True, text=True).stdout.strip()
        return (ip, 80), seconds

    def ip(self, name: str) -> str:
        """``faas ip NAME``."""
        return subprocess.run([*self._faas, "ip", name], check=True, capture_output=True, text=True).stdout.strip()

    def try_deploy(self, name: str, image: Path) -> str:
        """Deploy ``image`` as ``name``; what ``faas new`` said when it refused, "" when it deployed."""
        result = subprocess.run([*self._faas, "new", name, "-f", str(image)], capture_output=True, text=True)
        return result.stderr.strip() if result.returncode else ""

    def faas(self, *args: str, input: bytes | None = None) -> float:
        """Run ``faas ARGS`` against this daemon; how long it took."""
        started = time.perf_counter()
        subprocess.run([*self._faas, *args], check=True, capture_output=True, input=input)
        return time.perf_counter() - started

    def remove(self, name: str) -> None:
        """``faas rm``: its containers, warm ones included, stop and give back their slots."""
        subprocess.run([*self._faas, "rm", name], check=True, capture_output=True)

    @property
    def socket(self) -> Path:
        """The control API's unix socket."""
        return self._workdir / "run" / "faasd.sock"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def rootfs(self, name: str, version: int = 1) -> Path:
        return self._workdir / "state" / "images" / name / str(version) / "rootfs"

    def cpu_seconds(self) -> float:
        """CPU time the daemon process itself has used (not runc's or the containers')."""
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict[str, int]:
        """The daemon's current (VmRSS) and peak (VmHWM) resident memory, in KiB."""
        fields = {}
        for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("FAAS_TEST_CACHE", "/var/cache/faasd-tests")),
        help="where the example image's Debian base is cached",
    )
    return parser


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    """A temp dir for a benchmark's images and daemon dirs, removed afterwards (as root, like the rest)."""
    if os.geteuid() != 0:
        sys.exit("benchmarks start faasd and runc: run them as root")
    with tempfile.TemporaryDirectory(prefix="faasd-bench-") as tmp:
        # Containers (unprivileged host uids) must search through it to their rootfs.
        Path(tmp).chmod(0o711)
        yield Path(tmp)


@contextlib.contextmanager
def example_image(cache: Path) -> Iterator[Path]:
    """The example Python handler image, built offline into a work dir the daemon's dirs may share."""
    with work_dir() as work:
        image = work / "hello.tar"
        build_python_image(image, cache_dir=cache)
        yield image
