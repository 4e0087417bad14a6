"""Dependencies installed at deploy time, with the real daemon: pip in a container of the python
runtime, offline, from a package directory made here; refusals leave nothing."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.admission import Admission
from faasd.config import Config
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.sandbox.runc import Runc
from faasd.source.sandbox import OneShot, Output, RootfsImage
from tests.integration.conftest import Daemon, daemon_range, http_request, python_daemon
from tools.packages import write_wheel

RANGE = daemon_range(51)
MAX_DEPS = "4m"


@pytest.fixture(scope="module")
def packages(daemon_roots: Path) -> Path:
    """The operator's package directory: one small package that needs another, and one too
    large for the daemon's --max-deps-size. World-readable, as containers read it."""
    directory = Path(tempfile.mkdtemp(prefix="packages-", dir=daemon_roots))
    directory.chmod(0o755)
    greet = b"def greet(name):\n    return f'hi {name}'\n"
    write_wheel(directory, "faasgreet", "1.0", {"faasgreet/__init__.py": greet})
    write_wheel(
        directory,
        "faasmath",
        "2.0",
        {"faasmath/__init__.py": b"from faasgreet import greet\n\ndef double(x):\n    return 2 * x\n"},
        requires="faasgreet",
    )
    big = os.urandom(6 * 1024 * 1024)  # incompressible: the wheel and the install both take it all
    write_wheel(directory, "faasbig", "1.0", {"faasbig/__init__.py": b"", "faasbig/blob.bin": big})
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


@pytest.fixture(scope="module")
def daemon(daemon_roots: Path, python_runtime_image: Path, packages: Path) -> Iterator[Daemon]:
    flags = ("--packages", str(packages), "--max-deps-size", MAX_DEPS, "--warm", "1")
    with python_daemon(daemon_roots, python_runtime_image, RANGE, *flags) as daemon:
        yield daemon


def function_dir(parent: Path, requirements: str, handler: str) -> Path:
    directory = parent / "fn"
    directory.mkdir(exist_ok=True)
    (directory / "requirements.txt").write_text(requirements)
    (directory / "handler.py").write_text(handler)
    return directory


USES_DEPS = """\
import faasmath
from faasgreet import greet


def handler(event, context):
    return {"double": faasmath.double(event["x"]), "greeting": greet("deps"), "from": faasmath.__file__}
"""


def leftovers(daemon: Daemon) -> list[str]:
    """What a refused deploy could have left: uploads, a build's or a check's dirs and bundles
    (not those of warm containers, which come and go), an image of a function."""
    bundles = daemon.root / "run" / "bundles"
    found = [str(path) for path in bundles.iterdir() if path.name.split("-")[0] in ("code", "built", "oneshot")]
    for directory in (daemon.state_dir / "uploads", daemon.state_dir / "images"):
        found += [str(path) for path in directory.iterdir()]
    return sorted(found)


def test_requirements_are_installed_at_deploy_time_into_the_code_layer(daemon: Daemon, tmp_path: Path) -> None:
    code = function_dir(tmp_path, "faasmath==2.0\n", USES_DEPS)
    deployed = daemon.faas("new", "withdeps", "--runtime", "python", "--code", str(code), "--entry", "handler.py")
    assert deployed.returncode == 0, deployed.stderr
    ip = daemon.faas("ip", "withdeps").stdout.strip()
    status, _, body = http_request(ip, "POST", "/", json.dumps({"x": 21}).encode())
    assert status == 200, body
    answer = json.loads(body)
    assert answer["double"] == 42 and answer["greeting"] == "hi deps", "a dependency of a dependency too"
    assert answer["from"] == "/faas/deps/faasmath/__init__.py"

    rootfs = daemon.state_dir / "images" / "withdeps" / "1" / "rootfs"
    deps = rootfs / "faas" / "deps"
    assert (deps / "faasgreet" / "__init__.py").is_file() and (deps / "faasmath-2.0.dist-info").is_dir()
    assert [p.name for p in (deps / "faasmath" / "__pycache__").iterdir()], "compiled at deploy time"
    assert (rootfs / "faas" / "code" / "requirements.txt").is_file()

    again = daemon.faas("new", "withdeps", "--runtime", "python", "--code", str(code), "--entry", "handler.py")
    assert again.returncode == 0 and "same image as version 1" in again.stdout, "the same install is the same layer"


def test_an_unknown_package_is_refused_with_pips_last_lines_and_leaves_nothing(daemon: Daemon, tmp_path: Path) -> None:
    before = leftovers(daemon)
    code = function_dir(tmp_path, "faasmath==2.0\nno-such-package==1.0\n", USES_DEPS)
    refused = daemon.faas("new", "unknown", "--runtime", "python", "--code", str(code), "--entry", "handler.py")
    assert refused.returncode != 0
    assert "pip install failed" in refused.stderr
    assert "No matching distribution found for no-such-package==1.0" in refused.stderr, refused.stderr
    assert daemon.faas("describe", "unknown").returncode != 0, "no function, no version, no address"
    assert leftovers(daemon) == before


def test_dependencies_over_the_size_limit_are_refused(daemon: Daemon, tmp_path: Path) -> None:
    before = leftovers(daemon)
    code = function_dir(tmp_path, "faasbig\n", "import faasbig\n\ndef handler(event, context):\n    return 1\n")
    refused = daemon.faas("new", "big", "--runtime", "python", "--code", str(code), "--entry", "handler.py")
    assert refused.returncode != 0 and "pip install failed" in refused.stderr
    assert "No space left on device" in refused.stderr, refused.stderr
    assert daemon.faas("describe", "big").returncode != 0
    assert leftovers(daemon) == before


def test_a_run_once_installs_its_requirements_too(daemon: Daemon, tmp_path: Path) -> None:
    code = function_dir(tmp_path, "faasmath\n", USES_DEPS)
    ran = daemon.faas("run", "--runtime", "python", "--code", str(code), "--entry", "handler.py", "--input", '{"x": 2}')
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(ran.stdout)["result"]["double"] == 4


def runtime_image(daemon: Daemon) -> RootfsImage:
    """The daemon's python runtime, as its one-shot containers run on it."""
    record = json.loads((daemon.state_dir / "runtimes" / "python" / "3" / "runtime.json").read_text())
    config = ImageConfig.from_json(json.dumps(record["config"]))
    return RootfsImage(daemon.state_dir / "runtimes" / "python" / "3" / "rootfs", config, record["uid"], record["gid"])


def test_a_build_container_is_killed_once_its_output_passes_the_limit_or_at_its_timeout(daemon: Daemon) -> None:
    config = Config(state_dir=daemon.state_dir, run_dir=daemon.root / "run")
    oneshot = OneShot(config, Runc(config.runc_binary, config.runc_root), Admission(config.admission))
    flood = ["python3", "-c", "import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)"]
    with tempfile.TemporaryFile() as out:
        finished = asyncio.run(oneshot.run(runtime_image(daemon), flood, [], [], Limits(), 60, Output(out, 1 << 20)))
        assert finished.output_over and not finished.timed_out and finished.exit_code is None
        assert out.seek(0, os.SEEK_END) <= 1 << 20, "what passes the limit is not written"
    slow = asyncio.run(oneshot.run(runtime_image(daemon), ["sleep", "60"], [], [], Limits(), 1))
    assert slow.timed_out and not slow.output_over
    assert not [p for p in (daemon.root / "run" / "bundles").iterdir() if p.name.startswith("oneshot-")]
