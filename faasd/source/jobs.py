"""Jobs: files, a command, stdin and a timeout, run once on a runtime or on a deployed function's
image (the request Functron takes).

    {"FnName": "my-example-function",
     "DockerFile": "FROM python\nCMD python3 /data/main.py",
     "TarFile": "<base64 of a tar>", "Stdin": "Hello!", "Timeout": 5.0}

``DockerFile`` is held to ``FROM`` (a runtime's name, or ``function:NAME`` for the image of
function NAME's current version), ``CMD`` (shell or exec form, run by the image's ``/bin/sh``),
``ENV`` and ``WORKDIR``: anything that would build is refused. The tar is unpacked by the image unpacker
(every path resolved inside its root) and bound read-only at ``/data``; stdin is a file the
command reads; the container is the one-shot sandbox of ``faasd.source.sandbox``, killed at
``Timeout``. ``FnName`` names the job in the log.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import shlex
import tarfile
from dataclasses import dataclass
from typing import Any

from faasd.errors import InvalidRequest
from faasd.registry import validate_name

FIELDS = frozenset({"FnName", "DockerFile", "TarFile", "Stdin", "Timeout"})
MAX_TAR_BYTES = 64 << 20
MAX_STDIN_BYTES = 16 << 20
MAX_TIMEOUT_SECONDS = 300.0
STDIN = "/faas/io/stdin"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FUNCTION_BASE = "function:"  # FROM function:NAME: the image of a deployed function


@dataclass(frozen=True)
class Job:
    """One job, checked: what runs, on what, with which files, input and time."""

    name: str
    runtime: str | None  # the runtime it runs on, or None for ``function``'s image
    function: str | None
    args: tuple[str, ...]  # what the container runs: the command, its stdin from STDIN
    env: tuple[str, ...]
    workdir: str
    tar: bytes
    stdin: bytes
    timeout: float


def command_args(cmd: str) -> tuple[str, ...]:
    """``CMD``'s shell or exec form, run with its stdin read from ``STDIN``."""
    if cmd.startswith("["):
        try:
            argv = json.loads(cmd)
        except ValueError as exc:
            raise InvalidRequest(f"CMD's exec form is not a JSON array: {exc}") from None
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise InvalidRequest("CMD's exec form must be a non-empty array of strings")
        return ("/bin/sh", "-c", f'exec "$@" < {STDIN}', "sh", *argv)
    return ("/bin/sh", "-c", f"exec < {STDIN}\n{cmd}")


def parse_dockerfile(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """FROM, CMD (as args), ENV and WORKDIR of a Dockerfile that may hold only those."""
    base, args, env, workdir = None, None, [], "/data"
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            base = rest
        elif instruction == "CMD":
            args = command_args(rest)
        elif instruction == "WORKDIR":
            workdir = rest
        elif instruction == "ENV":
            env += env_pairs(rest)
        else:
            raise InvalidRequest(f"DockerFile: {instruction} is not taken: a job has FROM, CMD, ENV and WORKDIR only")
    if not base or args is None:
        raise InvalidRequest("DockerFile needs FROM (a runtime: faas runtime list) and CMD")
    return base, args, tuple(env), workdir


def env_pairs(rest: str) -> list[str]:
    """``ENV K=V K2="V 2"`` or ``ENV K V``, as ``K=V`` strings."""
    words = shlex.split(rest)
    pairs = [f"{words[0]}={' '.join(words[1:])}"] if words and "=" not in words[0] else words
    for pair in pairs:
        if not ENV_NAME.fullmatch(pair.partition("=")[0]):
            raise InvalidRequest(f"DockerFile: ENV {pair[:40]!r} is not NAME=VALUE")
    return pairs


def parse_job(body: Any) -> Job:
    """A Functron request, checked; the tar is decoded and read through once to see it is one."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"send a JSON object with {', '.join(sorted(FIELDS))}")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}: a job takes {', '.join(sorted(FIELDS))}")
    for field in ("FnName", "DockerFile"):
        if not isinstance(body.get(field), str):
            raise InvalidRequest(f"{field!r} is missing or not a string")
    timeout = body.get("Timeout", 30.0)
    if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequest(f"Timeout is seconds, above 0 and at most {MAX_TIMEOUT_SECONDS:g}")
    stdin = body.get("Stdin") or ""
    if not isinstance(stdin, str) or len(stdin) > MAX_STDIN_BYTES:
        raise InvalidRequest(f"Stdin is a string of at most {MAX_STDIN_BYTES} bytes")
    tar = decode_tar(body.get("TarFile") or "")
    base, args, env, workdir = parse_dockerfile(body["DockerFile"])
    runtime, function = base_of(base)
    return Job(body["FnName"][:64], runtime, function, args, env, workdir, tar, stdin.encode(), float(timeout))


def base_of(base: str) -> tuple[str | None, str | None]:
    """(runtime, None) for ``FROM RUNTIME``, (None, function) for ``FROM function:NAME``."""
    if base.startswith(FUNCTION_BASE):
        return None, validate_name(base.removeprefix(FUNCTION_BASE))
    return base, None


def decode_tar(text: Any) -> bytes:
    """The base64 tar (empty: no files), refused unless it decodes and reads as a tar."""
    if not isinstance(text, str) or len(text) > MAX_TAR_BYTES * 4 // 3 + 4:
        raise InvalidRequest(f"TarFile is base64 of a tar of at most {MAX_TAR_BYTES} bytes")
    if not text:
        return b""
    try:
        data = base64.b64decode(text, validate=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.getmembers()
    except (binascii.Error, ValueError, tarfile.TarError) as exc:
        raise InvalidRequest(f"TarFile is not base64 of a tar: {exc}") from None
    return data
