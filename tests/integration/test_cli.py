"""The ``faas`` program as a user runs it, against the real daemon: ``-t`` with a container engine,
upload progress on a terminal, ``--json``, exit codes, shell completion.

There is no docker or podman here: a small executable named ``docker`` (or ``podman``) on PATH
stands in for the engine, writing a real image archive built by tools/build_image.py, or failing
the way the engine does.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faas_cli.progress import format_bytes
from tests.integration.conftest import BIN, Daemon, daemon_range, http_get, start_daemon

BODY = "hello from the cli"


@pytest.fixture(scope="module")
def daemon(daemon_roots: Path) -> Iterator[Daemon]:
    """One daemon for this module's tests; each test deploys under names of its own."""
    daemon = start_daemon(daemon_roots, daemon_range(30))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def image(busybox_image: Callable[..., Path]) -> Path:
    return busybox_image(BODY)


def fake_engine(bin_dir: Path, name: str, archive: Path | None, status: int = 0, stderr: str = "") -> Path:
    """An executable ``name`` in ``bin_dir`` that records its argv, writes ``archive`` to stdout
    (in two halves a moment apart, as a real save streams), then ``stderr``, and exits ``status``."""
    bin_dir.mkdir(exist_ok=True)
    engine = bin_dir / name
    engine.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys, time\n"
        f"pathlib.Path({str(bin_dir / (name + '.argv'))!r}).write_text(' '.join(sys.argv[1:]))\n"
        f"data = pathlib.Path({str(archive)!r}).read_bytes() if {archive is not None} else b''\n"
        "sys.stdout.buffer.write(data[: len(data) // 2]); sys.stdout.flush(); time.sleep(0.3)\n"
        "sys.stdout.buffer.write(data[len(data) // 2 :]); sys.stdout.flush()\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({status})\n"
    )
    engine.chmod(0o755)
    return engine


def faas(daemon: Daemon, *args: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``faas``, with PATH set to ``path`` only (so no engine but the fakes is found)."""
    environ = {**os.environ, "FAAS_ENGINE": "", "PATH": str(path or "/nonexistent"), **env}
    return subprocess.run(
        [str(BIN / "faas"), "--socket", str(daemon.socket), *args],
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def deployed(daemon: Daemon) -> dict[str, dict]:
    return {function["name"]: function for function in json.loads(daemon.faas("list", "--json").stdout)}


def uploads_left(daemon: Daemon) -> list[Path]:
    return list((daemon.state_dir / "uploads").iterdir())


def test_new_with_t_saves_the_image_with_docker_and_serves_it(daemon: Daemon, image: Path, tmp_path: Path) -> None:
    fake_engine(tmp_path / "bin", "docker", image)
    result = faas(daemon, "new", "saved", "-t", "hello:1", path=tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bin" / "docker.argv").read_text() == "save hello:1"
    function = deployed(daemon)["saved"]
    assert function["image"] == "hello:1"
    assert result.stdout == f"Deployed saved at {function['ip']} (version 1)\n"
    assert result.stderr == ""  # no terminal, so no progress
    assert http_get(function["ip"]) == (200, (BODY + "\n").encode())


def test_podman_is_used_when_docker_is_missing_and_faas_engine_chooses(
    daemon: Daemon, image: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    fake_engine(bin_dir, "podman", image)
    assert faas(daemon, "new", "by-podman", "-t", "hello", path=bin_dir).returncode == 0
    assert (bin_dir / "podman.argv").read_text() == "save hello"

    custom = fake_engine(tmp_path / "elsewhere", "my-engine", image)
    result = faas(daemon, "new", "by-env", "-t", "hello", path=bin_dir, FAAS_ENGINE=str(custom))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere" / "my-engine.argv").read_text() == "save hello"
    result = faas(daemon, "new", "by-flag", "-t", "hello", "--engine", "podman", path=bin_dir)
    assert result.returncode == 0, result.stderr
    assert {"by-podman", "by-env", "by-flag"} <= deployed(daemon).keys()


@pytest.mark.parametrize(
    ("archive", "stderr"),
    [
        (False, "Error response from daemon: No such image: ghost:latest\n"),
        # The whole archive, and then a failure: the upload must still not complete.
        (True, "write /dev/stdout: no space left on device\n"),
    ],
)
def test_a_failing_save_exits_1_says_why_and_deploys_nothing(
    daemon: Daemon, image: Path, tmp_path: Path, archive: bool, stderr: str
) -> None:
    fake_engine(tmp_path / "bin", "docker", image if archive else None, status=1, stderr=stderr)
    result = faas(daemon, "new", "never", "-t", "ghost", path=tmp_path / "bin")
    assert result.returncode == 1
    assert result.stderr == f"faas: {tmp_path / 'bin' / 'docker'} save ghost failed with exit status 1: {stderr}"
    assert result.stdout == ""
    assert "never" not in deployed(daemon)
    assert uploads_left(daemon) == []


def test_without_an_engine_t_exits_1_with_what_to_do(daemon: Daemon, tmp_path: Path) -> None:
    result = faas(daemon, "new", "none", "-t", "hello", path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("faas: neither docker nor podman is on PATH: install one, name one with --engine")
    result = faas(daemon, "new", "none", "-t", "hello", "--engine", "nerdctl", path=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr
        == "faas: the container engine 'nerdctl' is not on PATH: install it, or name another with --engine\n"
    )


def test_f_and_stdin_still_deploy_and_t_picks_from_the_archive(daemon: Daemon, image: Path) -> None:
    assert daemon.faas("new", "from-stdin", input=image.read_bytes()).returncode == 0
    result = daemon.faas("new", "from-file", "-f", str(image), "-t", "busybox-hello")
    assert result.returncode == 0, result.stderr
    result = daemon.faas("new", "from-dash", "-f", "-", "-t", "other:9", input=image.read_bytes())
    assert result.returncode == 1
    assert "no image tagged 'other:9' in the archive" in result.stderr
    functions = deployed(daemon)
    assert functions["from-file"]["image"] == "busybox-hello" and "from-dash" not in functions


def run_on_a_terminal(daemon: Daemon, *args: str, path: Path) -> tuple[int, str, str]:
    """``faas`` with stderr on a pseudo-terminal: (exit status, stdout, what the terminal showed)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "faas"), "--socket", str(daemon.socket), *args],
        env={**os.environ, "PATH": str(path)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:  # EIO: the last holder of the terminal closed it
            break
        if not data:
            break
        shown += data
    os.close(controller)
    stdout, _ = proc.communicate(timeout=120)
    return proc.returncode, stdout.decode(), shown.decode()


def test_progress_shows_bytes_and_rate_on_a_terminal_only(daemon: Daemon, image: Path, tmp_path: Path) -> None:
    fake_engine(tmp_path / "bin", "docker", image)
    status, stdout, shown = run_on_a_terminal(daemon, "new", "shown", "-t", "hello", path=tmp_path / "bin")
    assert status == 0 and stdout.startswith("Deployed shown at ")
    # The engine pauses half-way, so the line is drawn mid-upload, then left as a summary.
    assert "\rUploading  " in shown and "B/s" in shown
    assert "\rUploaded " in shown and shown.endswith("importing\r\n")

    # The layer faasd holds now is left out, and said so (from a pipe too, if it held it then).
    status, _, shown = run_on_a_terminal(daemon, "new", "shown", "-f", str(image), path=tmp_path / "bin")
    size = format_bytes(image.stat().st_size)
    assert status == 0 and "\rUploaded " in shown and f"Uploaded {size} in " not in shown
    with tarfile.open(image) as tar:
        layer = format_bytes(tar.getmember(json.load(tar.extractfile("manifest.json"))[0]["Layers"][0]).size)  # type: ignore[arg-type]
    assert f", 1 layer faasd holds left out ({layer}), importing\r\n" in shown

    status, stdout, shown = run_on_a_terminal(daemon, "new", "hushed", "-q", "-t", "hello", path=tmp_path / "bin")
    assert status == 0 and stdout.startswith("Deployed hushed at ") and shown == ""


def test_every_record_and_table_has_json(daemon: Daemon, image: Path) -> None:
    new = json.loads(daemon.faas("new", "as-json", "-f", str(image), "--json").stdout)
    assert new["name"] == "as-json" and new["version"] == 1
    assert http_get(new["ip"]) == (200, (BODY + "\n").encode())
    assert deployed(daemon)["as-json"] == new
    stats = json.loads(daemon.faas("stats", "--json").stdout)
    assert stats["functions"]["as-json"]["requests"] == {"handler": 1.0}
    assert stats["functions_deployed"] >= 1 and stats["imports"]["count"] >= 1
    removed = json.loads(daemon.faas("rm", "as-json", "--json").stdout)
    assert removed == {"removed": "as-json", "ip": new["ip"]}


def test_exit_codes_are_0_ok_1_refused_2_unreachable(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.faas("list").returncode == 0
    for args in (("ip", "ghost"), ("rm", "ghost"), ("new", "Bad_Name"), ("list", "--bogus"), ("bogus",)):
        result = daemon.faas(*args)
        assert result.returncode == 1, (args, result.stderr)
    unreachable = subprocess.run(
        [str(BIN / "faas"), "--socket", str(tmp_path / "gone.sock"), "list"], capture_output=True, text=True
    )
    assert unreachable.returncode == 2 and "faasd is not running at" in unreachable.stderr


def test_shell_completion_scripts_and_function_names(daemon: Daemon, image: Path) -> None:
    for shell, marker in (
        ("bash", "_faas_completion"),
        ("zsh", "#compdef faas"),
        ("fish", "complete --no-files --command faas"),
    ):
        script = subprocess.run(
            [str(BIN / "faas")], env={**os.environ, "_FAAS_COMPLETE": f"{shell}_source"}, capture_output=True, text=True
        )
        assert script.returncode == 0 and marker in script.stdout, shell
    daemon.deploy("complete-me", image)
    words = f"faas --socket {daemon.socket} rm complete"
    names = subprocess.run(
        [str(BIN / "faas")],
        env={**os.environ, "_FAAS_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "4"},
        capture_output=True,
        text=True,
    )
    assert names.stdout.splitlines() == ["plain,complete-me"]
