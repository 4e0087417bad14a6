"""``faas new -t IMAGE``: run ``docker save IMAGE`` (or podman's) and stream what it writes.

The archive goes straight from the engine's stdout into the upload, never through a temp file.
Its exit status is known only once its stdout ends, and is checked before the upload's last
(empty) chunk is sent: a failed save raises there, the daemon sees a body cut off before its
end, and nothing is deployed.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from faas_cli.client import UPLOAD_BLOCK_BYTES, ClientError

# Tried in this order when neither --engine nor FAAS_ENGINE names one.
ENGINES = ("docker", "podman")
# What of the engine's stderr is kept for the error message: its end says what went wrong.
STDERR_TAIL_BYTES = 4096
# How long ``ENGINE version`` may take to say whether its daemon answers.
PROBE_SECONDS = 10.0


class EngineError(ClientError):
    """Raised when no container engine is found, or its ``save`` fails."""


def find_engine(choice: str | None, say: Callable[[str], None] = lambda _: None) -> str:
    """The path of the engine to run: ``choice`` (a name on PATH or a path), else the first of
    docker and podman that is installed and answers.

    An engine is asked whether it answers only when the other one is installed too: docker
    without its daemon, beside a podman that needs none, is the common wrong turn. Unasked
    for, faas then takes the other one and ``say``s so; asked for by name, it stops and says
    how to name the other one.
    """
    if choice:
        path = shutil.which(choice)
        if path is None:
            raise EngineError(
                f"the container engine {choice!r} is not on PATH: install it, or name another with --engine"
            )
        other = _other_engine(path)
        if other is not None and (problem := unreachable(path)):
            name = Path(other).name
            raise EngineError(f"{problem}: {name} is installed: use --engine {name} or FAAS_ENGINE={name}")
        return path
    found = [path for name in ENGINES if (path := shutil.which(name))]
    if not found:
        raise EngineError(
            "neither docker nor podman is on PATH: install one, name one with --engine / FAAS_ENGINE, "
            "or give the archive yourself (-f FILE, or pipe it in)"
        )
    if len(found) > 1 and (problem := unreachable(found[0])):
        say(f"faas: {problem}; saving with {Path(found[1]).name} instead")
        return found[1]
    return found[0]


def unreachable(engine: str) -> str | None:
    """Why ``engine`` cannot save an image now (its daemon does not answer), or None when it can.

    ``ENGINE version`` asks the daemon for its version: the cheapest question that needs it.
    """
    argv = [engine, "version"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return f"{Path(engine).name}'s daemon did not answer in {PROBE_SECONDS:g} s"
    except OSError as exc:
        return f"cannot run {engine}: {exc.strerror}"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return f"{Path(engine).name} cannot reach its daemon: {lines[-1] if lines else 'no message'}"


def _other_engine(path: str) -> str | None:
    """The other engine's path, when ``path`` is docker or podman and the other one is installed."""
    name = Path(path).name
    if name not in ENGINES:
        return None
    return shutil.which(ENGINES[1 - ENGINES.index(name)])


def save_argv(engine: str, image: str) -> list[str]:
    """``docker save IMAGE``: the archive on stdout. Podman takes the same words."""
    return [engine, "save", image]


@contextlib.contextmanager
def saved_image(engine: str, image: str) -> Iterator[Iterator[bytes]]:
    """The blocks of ``engine save image`` as it writes them; the engine is stopped on exit."""
    argv = save_argv(engine, image)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise EngineError(f"cannot run {' '.join(argv)}: {exc.strerror}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr_tail = bytearray()
    # Drained alongside stdout: an engine blocked on a full stderr pipe would never finish stdout.
    reader = threading.Thread(target=_keep_tail, args=(proc.stderr, stderr_tail), daemon=True)
    reader.start()
    try:
        yield _blocks(proc, argv, reader, stderr_tail)
    finally:
        if proc.poll() is None:
            proc.kill()  # the upload stopped early (refused, or Ctrl-C): the rest is not wanted
        proc.wait()
        reader.join()
        proc.stdout.close()
        proc.stderr.close()


def _blocks(
    proc: subprocess.Popen[bytes], argv: list[str], reader: threading.Thread, stderr_tail: bytearray
) -> Iterator[bytes]:
    # Popen's pipes are buffered readers (bufsize -1): read1 gives what one read of the pipe holds.
    stdout = cast(io.BufferedReader, proc.stdout)
    while block := stdout.read1(UPLOAD_BLOCK_BYTES):
        yield block
    status = proc.wait()
    reader.join()
    if status != 0:
        detail = stderr_tail.decode(errors="replace").strip() or "no message"
        raise EngineError(f"{' '.join(argv)} failed with exit status {status}: {detail}")


def _keep_tail(stream: io.BufferedReader, tail: bytearray) -> None:
    while chunk := stream.read1(STDERR_TAIL_BYTES):
        tail += chunk
        del tail[:-STDERR_TAIL_BYTES]
