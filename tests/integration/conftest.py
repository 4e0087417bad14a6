"""The real daemon, as root, with real runc containers, on a temp state dir and its own range."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tools.build_image import build_busybox_image, build_python_image, build_runtime_image
from tools.local_registry import LocalRegistry, start_registry

BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("FAAS_TEST_CACHE", "/var/cache/faasd-tests"))
# The second octet of the test ranges: two checkouts testing at once on one host set it apart.
TEST_NET = int(os.environ.get("FAAS_TEST_NET", "77"))


def daemon_range(index: int) -> str:
    """The ``index``-th /24 reserved for tests; each daemon of a test session takes its own."""
    return f"127.{TEST_NET}.{index}.0/24"


def first_ip(ip_range: str) -> str:
    """The address faasd gives the first function of ``ip_range``."""
    return str(ipaddress.IPv4Network(ip_range)[2])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every integration test runs the daemon as root with runc: skipped without them, failed in CI."""
    for item in items:
        if "integration" in item.nodeid:
            for marker in (pytest.mark.integration, pytest.mark.needs_root, pytest.mark.needs_runc):
                item.add_marker(marker)


@dataclass
class Daemon:
    """One faasd process; ``start``/``stop`` may be called again to restart it."""

    root: Path
    ip_range: str
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "run" / "faasd.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log(self) -> Path:
        return self.root / "faasd.log"

    def command(self) -> list[str]:
        return [
            str(BIN / "faasd"),
            "--state-dir",
            str(self.state_dir),
            "--run-dir",
            str(self.root / "run"),
            "--ip-range",
            self.ip_range,
            # Warm pools empty a second after a function's last connection: a test then sees every
            # container, bundle and control socket gone, warm ones included, within its patience.
            "--warm-idle",
            "1",
            *self.extra_args,
        ]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"faasd exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if self.socket.exists() and self.faas("list").returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"faasd did not become ready:\n{self.log.read_text()}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def faas(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``faas`` CLI against this daemon (with ``env`` added to the environment)."""
        result = subprocess.run(
            [str(BIN / "faas"), "--socket", str(self.socket), *args],
            input=input,
            capture_output=True,
            timeout=300,
            env=None if env is None else {**os.environ, **env},
        )
        return subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
        )

    def deploy(self, name: str, image: Path, *args: str) -> str:
        """Deploy ``image`` as ``name`` and return the function's IP."""
        result = self.faas("new", name, "-f", str(image), *args)
        assert result.returncode == 0, result.stderr
        return self.faas("ip", name).stdout.strip()


@pytest.fixture(scope="session")
def daemon_roots() -> Iterator[Path]:
    """Where this session's daemons keep their dirs, removed at the end.

    Containers run as unprivileged host uids and must search the way to their rootfs. pytest's
    own temp dirs cannot serve: pytest keeps /tmp/pytest-of-USER at mode 0700 and resets it so
    whenever another pytest starts, which would cut off a running session's containers.
    """
    roots = Path(tempfile.mkdtemp(prefix="faasd-tests-"))
    roots.chmod(0o711)
    yield roots
    shutil.rmtree(roots, ignore_errors=True)


def new_daemon(roots: Path, ip_range: str, *extra_args: str) -> Daemon:
    """A daemon on a fresh dir under ``roots``, not started yet (to prepare its dirs first)."""
    root = Path(tempfile.mkdtemp(prefix="faasd", dir=roots))
    root.chmod(0o711)
    return Daemon(root, ip_range, list(extra_args))


def start_daemon(roots: Path, ip_range: str, *extra_args: str) -> Daemon:
    """A running daemon on a fresh dir under ``roots``; the caller stops it."""
    daemon = new_daemon(roots, ip_range, *extra_args)
    daemon.start()
    return daemon


def add_python_runtime(daemon: Daemon, image: Path) -> None:
    """``faas runtime add python -f image`` on ``daemon``, which must take it."""
    added = daemon.faas("runtime", "add", "python", "-f", str(image))
    assert added.returncode == 0, added.stderr


@contextlib.contextmanager
def python_daemon(roots: Path, runtime_image: Path, ip_range: str, *extra_args: str) -> Iterator[Daemon]:
    """A running daemon with the python runtime added (a module's functions from source), stopped
    and removed afterwards."""
    daemon = start_daemon(roots, ip_range, *extra_args)
    try:
        add_python_runtime(daemon, runtime_image)
        yield daemon
    finally:
        discard(daemon)


@pytest.fixture
def make_daemon(daemon_roots: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory of daemons, each on its own temp dirs and range; all are stopped at the end."""
    daemons: list[Daemon] = []

    def make(ip_range: str, *extra_args: str) -> Daemon:
        daemons.append(start_daemon(daemon_roots, ip_range, *extra_args))
        return daemons[-1]

    yield make
    for daemon in daemons:
        discard(daemon)


def discard(daemon: Daemon) -> None:
    """Stop ``daemon`` if it runs and remove its dirs now: left to the session's end, the rootfs
    of every daemon would be removed at once, in one teardown that a busy host makes slow."""
    if daemon.proc is not None:
        daemon.stop()
    shutil.rmtree(daemon.root, ignore_errors=True)


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon(daemon_range(0))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def busybox_image(images: Path) -> Callable[..., Path]:
    """Build (once per body and prelude) a static C handler image that answers with ``body``."""

    def build(body: str = "hello from C", prelude: str | None = None) -> Path:
        out = images / f"busybox-{abs(hash((body, prelude)))}.tar"
        if not out.exists():
            build_busybox_image(out, body=body, prelude=prelude)
        return out

    return build


@pytest.fixture(scope="session")
def python_image(images: Path) -> Path:
    """The example Python handler on a Debian base built with mmdebstrap (base cached)."""
    out = images / "python-hello.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_python_image(out, cache_dir=CACHE)
    return out


@pytest.fixture(scope="session")
def probe_image(images: Path) -> Path:
    """The handler in tests/integration/probe, which attacks its own sandbox on request."""
    out = images / "probe.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_python_image(out, cache_dir=CACHE, app_dir=Path(__file__).parent / "probe")
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Debian's docker-registry on loopback with htpasswd basic auth (tools/local_registry.py)."""
    registry = start_registry(tmp_path_factory.mktemp("registry"))
    yield registry
    registry.stop()


@pytest.fixture
def puller(make_daemon: Callable[..., Daemon], registry: LocalRegistry) -> Daemon:
    """A daemon that may pull from the test registry over plain HTTP, and gives up on it soon."""
    return make_daemon(daemon_range(0), "--insecure-registry", registry.host, "--registry-timeout", "2")


def http_get(ip: str, path: str = "/", timeout: float = 30) -> tuple[int, bytes]:
    """One GET on a new connection; returns status and body."""
    conn = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a daemon's --listen or --gateway."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def eventually(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; for clean-up that follows a reply."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="session")
def python_runtime_image(images: Path) -> Path:
    """Debian's python3 alone, for ``faas runtime add python`` (the base the python images use)."""
    out = images / "python-runtime.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_runtime_image(out, "python", cache_dir=CACHE)
    return out


@pytest.fixture(scope="session")
def node_runtime_image(images: Path) -> Path:
    """Debian's nodejs with node-typescript and npm, for ``faas runtime add node``."""
    out = images / "node-runtime.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_runtime_image(out, "node", cache_dir=CACHE)
    return out


def http_request(
    ip: str, method: str, path: str = "/", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection; returns status, headers (lower-case names) and body."""
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
