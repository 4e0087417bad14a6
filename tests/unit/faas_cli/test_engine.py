"""``docker save`` run by ``faas new -t``: which engine, its output streamed, its failures reported.

Stand-in engines are small executables on PATH; the code under test runs them as it would docker.
"""

import sys
import time
from pathlib import Path

import pytest

from faas_cli.engine import STDERR_TAIL_BYTES, EngineError, find_engine, save_argv, saved_image


def engine(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{script}\n")
    path.chmod(0o755)
    return path


def test_docker_is_preferred_then_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    podman = engine(tmp_path, "podman", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_engine(None) == str(podman)
    docker = engine(tmp_path, "docker", "")
    assert find_engine(None) == str(docker)
    assert find_engine("podman") == str(podman)
    assert find_engine(str(podman)) == str(podman)


def test_a_missing_engine_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match=r"neither docker nor podman is on PATH: install one, name one with --engine"):
        find_engine(None)
    with pytest.raises(EngineError, match=r"the container engine 'nerdctl' is not on PATH"):
        find_engine("nerdctl")


def test_save_argv() -> None:
    assert save_argv("/usr/bin/docker", "hello:1") == ["/usr/bin/docker", "save", "hello:1"]


def test_the_archive_is_streamed_as_written(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000
    (tmp_path / "archive").write_bytes(data)
    docker = engine(tmp_path, "docker", f"sys.stdout.buffer.write(open({str(tmp_path / 'archive')!r}, 'rb').read())")
    with saved_image(str(docker), "hello") as blocks:
        assert b"".join(blocks) == data


def test_a_failed_save_raises_with_the_end_of_its_stderr(tmp_path: Path) -> None:
    noise = "x" * 10_000
    docker = engine(
        tmp_path,
        "docker",
        f"sys.stdout.write('partial'); sys.stderr.write({noise!r} + '\\nNo such image: ghost\\n'); sys.exit(125)",
    )
    with saved_image(str(docker), "ghost") as blocks:
        received = []
        with pytest.raises(EngineError) as error:
            for block in blocks:
                received.append(block)
    # Everything written was passed on; the failure comes before the upload could end.
    assert received == [b"partial"]
    message = str(error.value)
    prefix = f"{docker} save ghost failed with exit status 125: "
    assert message.startswith(prefix + "xxx") and message.endswith("\nNo such image: ghost")
    assert len(message) <= len(prefix) + STDERR_TAIL_BYTES  # only the end of a long stderr is kept


def test_an_upload_stopped_early_stops_the_engine(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    docker = engine(
        tmp_path,
        "docker",
        f"import os; open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "while True: sys.stdout.buffer.write(b'x' * 65536)",
    )
    start = time.monotonic()
    with saved_image(str(docker), "endless") as blocks:
        next(iter(blocks))
    assert time.monotonic() - start < 10
    assert not Path(f"/proc/{pid_file.read_text()}").exists()


def test_an_engine_that_cannot_run_is_an_engine_error(tmp_path: Path) -> None:
    broken = tmp_path / "docker"
    broken.write_text("not a program")
    broken.chmod(0o755)
    with pytest.raises(EngineError, match=rf"cannot run {broken} save hello: Exec format error"):
        with saved_image(str(broken), "hello"):
            pass


DOCKER_WITHOUT_DAEMON = """
if sys.argv[1] == "version":
    sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
"""


def test_docker_without_its_daemon_gives_way_to_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine(tmp_path, "docker", DOCKER_WITHOUT_DAEMON)
    podman = engine(tmp_path, "podman", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    notes: list[str] = []
    assert find_engine(None, say=notes.append) == str(podman)
    assert notes == [
        "faas: docker cannot reach its daemon: Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
        " Is the docker daemon running?; saving with podman instead"
    ]


def test_docker_named_without_its_daemon_says_how_to_name_podman(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine(tmp_path, "docker", DOCKER_WITHOUT_DAEMON)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_engine("docker") == str(tmp_path / "docker"), "no podman: docker's own error will say why"
    engine(tmp_path, "podman", "")
    with pytest.raises(EngineError, match=r"podman is installed: use --engine podman or FAAS_ENGINE=podman$"):
        find_engine("docker")


def test_docker_alone_is_not_asked_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = engine(tmp_path, "docker", "sys.exit('asked ' + ' '.join(sys.argv[1:]))")
    monkeypatch.setenv("PATH", str(tmp_path))
    notes: list[str] = []
    assert find_engine(None, say=notes.append) == str(docker) and notes == []
