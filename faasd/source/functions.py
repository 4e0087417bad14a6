"""Deploying a function from source: check the code in a container of its runtime, then import
the runtime's layers plus one layer of code as the function's next version.

The code is checked before anything is imported: the runtime's wrapper loads the entry (a
syntax error names file, line and column; a missing handler is named), in a one-shot container
with the files bound read-only at ``/faas/code``. A refused deploy leaves no file, version or
address. The version is then imported by ``Functions.deploy`` like any image, so versions,
rollback, pinned addresses, limits and logs are those of every function.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import logging
import os
import re
import stat
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from faasd.config import Config
from faasd.errors import InvalidCode, InvalidRequest, NotATemplate
from faasd.functions import Functions
from faasd.images import overlay
from faasd.images.store import discard
from faasd.images.tree import remove_or_log
from faasd.images.unpack import Budget, UnpackLimits, apply_layer
from faasd.limits import Limits
from faasd.registry import Function
from faasd.source.archive import files_layer, write_archive
from faasd.source.build import Builder, code_layer, temporary_file
from faasd.source.jobs import MAX_TAR_BYTES, Job
from faasd.source.runtimes import (
    CODE_DIR,
    DEPS_DIR,
    IO_DIR,
    JOB_DATA,
    LANGUAGES,
    BuildStep,
    Runtime,
    Runtimes,
    composed_archive,
)
from faasd.source.sandbox import Finished, Mount, OneShot, RootfsImage, Tmpfs

log = logging.getLogger(__name__)

MAX_FILES = 1000
JOB_FILES = UnpackLimits(max_bytes=4 * MAX_TAR_BYTES, max_entries=100_000)
MAX_PATH = 255
PATH_PART = re.compile(r"[A-Za-z0-9_.@+-][A-Za-z0-9_.@+ -]{0,127}")
IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,127}")
SOURCE_FIELDS = frozenset({"runtime", "files", "entry", "handler"})
MessageSink = Callable[[Any], Awaitable[None]]  # a streamed run's items and printed lines, as they come


@dataclass(frozen=True)
class Source:
    """A function's code as deployed: its files (relative paths), the entry file, the handler name."""

    runtime: str
    files: Mapping[str, bytes]
    entry: str
    handler: str = "handler"

    def env(self, step: BuildStep | None = None) -> list[str]:
        """The environment its containers run with; the entry is the file that runs, so the
        compiled one when ``step`` (its language's build) compiles it."""
        entry = step.runs(self.entry) if step is not None else self.entry
        return [f"FAAS_RUNTIME={self.runtime}", f"FAAS_ENTRY={entry}", f"FAAS_HANDLER={self.handler}"]


def check_path(path: str) -> str:
    """``path`` if it is a plain relative path inside the code dir, else a 400 saying why."""
    parts = path.split("/")
    if len(path) > MAX_PATH or not all(PATH_PART.fullmatch(part) for part in parts) or ".." in parts:
        raise InvalidRequest(
            f"file name {path[:80]!r} is not a relative path of letters, digits and ._@+- (no '..', no leading /)"
        )
    if parts[0] in ("", ".") or any(part in ("", ".") for part in parts):
        raise InvalidRequest(f"file name {path[:80]!r} has an empty or '.' part")
    return path


def parse_source(body: Any, max_bytes: int) -> Source:
    """The ``{"runtime", "files": {path: text}, "entry", "handler"}`` of a deploy, checked. Pure."""
    if not isinstance(body, dict):
        raise InvalidRequest('send a JSON object: {"runtime", "files": {"path": "source"}, "entry", "handler"}')
    unknown = set(body) - SOURCE_FIELDS
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) {', '.join(sorted(unknown))}: a source deploy takes {sorted(SOURCE_FIELDS)}"
        )
    runtime, files, entry = body.get("runtime"), body.get("files"), body.get("entry")
    handler = body.get("handler", "handler")
    if not isinstance(runtime, str) or not runtime:
        raise InvalidRequest("name the runtime: 'runtime' (faas runtime list)")
    if not isinstance(files, dict) or not files:
        raise InvalidRequest("'files' must map at least one file name to its source text")
    if len(files) > MAX_FILES:
        raise InvalidRequest(f"{len(files)} files: a function's source has at most {MAX_FILES}")
    encoded: dict[str, bytes] = {}
    for path, text in files.items():
        if not isinstance(text, str):
            raise InvalidRequest(f"the source of {check_path(path)!r} is not a string")
        encoded[check_path(path)] = text.encode("utf-8", "surrogatepass")
    size = sum(len(data) for data in encoded.values())
    if size > max_bytes:
        raise InvalidRequest(f"the source is {size} bytes, over the {max_bytes} byte limit")
    if entry is None and len(encoded) == 1:
        entry = next(iter(encoded))
    if not isinstance(entry, str) or entry not in encoded:
        raise InvalidRequest(
            f"the entry {entry!r} is not one of the files sent: name it with 'entry' (faas new --entry)"
        )
    if not isinstance(handler, str) or not IDENTIFIER.fullmatch(handler):
        raise InvalidRequest(f"the handler name {str(handler)[:80]!r} is not an identifier")
    return Source(runtime, encoded, entry, handler)


@asynccontextmanager
async def code_dir(parent: Path, files: Mapping[str, bytes]) -> AsyncIterator[Path]:
    """The files in a fresh directory a container's root may read (never write), removed afterwards.

    Written and removed in a thread: a job's stdin alone may be 16 MiB."""
    directory = parent / f"code-{uuid.uuid4().hex[:16]}"
    try:
        await asyncio.to_thread(write_files, directory, files)
        yield directory
    finally:
        await asyncio.to_thread(remove_or_log, directory)


def write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    directory.mkdir(mode=0o755)
    for path, data in files.items():
        target = directory / path
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    for folder, _, names in os.walk(directory):  # the modes above, whatever the daemon's umask
        os.chmod(folder, 0o755)
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644, follow_symlinks=False)


@asynccontextmanager
async def unpacked(parent: Path, tar: bytes, id_base: int) -> AsyncIterator[Path]:
    """``tar`` unpacked by the image unpacker (paths resolved inside the root, owners shifted
    into the containers' range) into a fresh directory, removed afterwards; both in a thread,
    as a tar of up to 64 MiB takes a while."""
    directory = parent / f"data-{uuid.uuid4().hex[:16]}"
    try:
        await asyncio.to_thread(unpack_files, directory, tar, id_base)
        yield directory
    finally:
        await asyncio.to_thread(remove_or_log, directory)


def unpack_files(directory: Path, tar: bytes, id_base: int) -> None:
    directory.mkdir(mode=0o755)
    if tar:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r|") as layer:
            apply_layer(layer, directory, Budget(JOB_FILES), id_base)


@dataclass(frozen=True)
class Workspace:
    """A function's code as containers of its runtime see it before it is deployed: host
    directories bound read-only, and the tar of what its build made (None without a build)."""

    code: Path
    deps: Path | None = None
    built: BinaryIO | None = None

    def mounts(self) -> list[Mount | Tmpfs]:
        return [Mount(self.code, CODE_DIR), *([Mount(self.deps, DEPS_DIR)] if self.deps else [])]


def lay_out_built(
    directory: Path, files: Mapping[str, bytes], built: BinaryIO, id_base: int
) -> tuple[Path, Path | None]:
    """The code and what its build made, as the code layer will hold them: the files in
    ``directory/code``, then the build's tar unpacked over ``directory`` by the image unpacker
    (paths resolved inside it). The code and deps directories to bind. Blocking."""
    directory.mkdir(mode=0o755)
    write_files(directory / "code", files)
    built.seek(0)
    with tarfile.open(fileobj=built, mode="r|") as layer:
        apply_layer(layer, directory, Budget(JOB_FILES), id_base)
    return real_dir(directory / "code"), real_dir(directory / "deps") if os.path.lexists(directory / "deps") else None


def real_dir(path: Path) -> Path:
    """``path`` if it is a directory and no link a build made (runc would follow it on the host)."""
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise InvalidCode(f"the build made {path.name} something else than a directory")
    return path


class SourceFunctions:
    """Deploys functions from source onto runtimes."""

    def __init__(self, config: Config, functions: Functions, runtimes: Runtimes, oneshot: OneShot) -> None:
        self._config = config
        self._functions = functions
        self.runtimes = runtimes
        self._oneshot = oneshot
        self._builder = Builder(config, oneshot)

    def parse(self, body: Any) -> Source:
        return parse_source(body, self._config.max_source_bytes)

    async def deploy(
        self, name: str, source: Source, limits: Limits, force: bool = False, check: bool = False
    ) -> Function:
        """Check ``source`` on its runtime, then deploy it as the next version of ``name``
        (``SameImage`` when the code, runtime and limits are the current version's, unless ``force``).
        With ``check``, one container of the version must also get ready as a connection's would
        (``faasd.check``): loading the code proves it imports, not that it serves in time."""
        runtime = self.runtimes.get(source.runtime)
        refuse_fork(runtime, limits)
        config = {
            "Cmd": list(runtime.config.cmd),
            "Env": [*runtime.config.env, *source.env(LANGUAGES[runtime.language].build)],
            "WorkingDir": runtime.config.working_dir,
            "User": runtime.config.user,
        }
        async with self.workspace(runtime, source, limits) as space:
            await self.check(runtime, source, limits, space)
            with composed_archive(self._config.uploads_dir) as archive, temporary_file(self._config.uploads_dir) as out:
                layer: bytes | BinaryIO = files_layer(source.files, CODE_DIR.lstrip("/"))
                if space.built is not None:
                    await asyncio.to_thread(code_layer, out, source.files, space.built)
                    layer = out
                await asyncio.to_thread(write_archive, archive, list(runtime.layers), [layer], config, f"{name}:source")
                return await self._functions.deploy(
                    name, archive, image=f"runtime/{runtime.name}", tag=None, limits=limits, force=force, check=check
                )

    @asynccontextmanager
    async def workspace(self, runtime: Runtime, source: Source, limits: Limits) -> AsyncIterator[Workspace]:
        """The code in a directory, built first when it asks to be (its language's manifest, or a
        file to compile, is among its files); everything removed afterwards."""
        language = LANGUAGES[runtime.language]
        async with code_dir(self._config.bundles_dir, source.files) as code:
            if language.build is None or not language.build.asks(source.files):
                yield Workspace(code)
                return
            with temporary_file(self._config.uploads_dir) as out:
                await self._builder.run(self.runtimes.image(runtime), language, source.files, code, limits, out)
                directory = self._config.bundles_dir / f"built-{uuid.uuid4().hex[:16]}"
                try:
                    built_code, deps = await asyncio.to_thread(
                        lay_out_built, directory, source.files, out, self._config.userns_base
                    )
                    yield Workspace(built_code, deps, out)
                finally:
                    await asyncio.to_thread(remove_or_log, directory)

    async def run(
        self, source: Source, event: Any, limits: Limits, on_message: MessageSink | None = None
    ) -> dict[str, Any]:
        """Call ``source`` once with ``event`` in a throw-away container of its runtime, under
        ``limits``: ``{result, stdout, stderr, exit_code, duration_ms}`` (and ``error``). With
        ``on_message``, the call streams: each item it yields and line it prints goes to it as it
        comes (as well as into ``stdout``)."""
        runtime = self.runtimes.get(source.runtime)
        language = LANGUAGES[runtime.language]
        request_id = uuid.uuid4().hex[:16]
        deadline_ms = int((time.time() + limits.timeout_seconds) * 1000)
        env = [*source.env(language.build), f"FAAS_REQUEST_ID={request_id}", f"FAAS_DEADLINE_MS={deadline_ms}"]
        async with (
            self.workspace(runtime, source, limits) as space,
            code_dir(self._config.bundles_dir, {"input.json": json.dumps(event).encode()}) as io_dir,
        ):
            finished = await self._oneshot.run(
                self.runtimes.image(runtime),
                [*language.command, "--once", *(["--stream"] if on_message else [])],
                env,
                [*space.mounts(), Mount(io_dir, IO_DIR)],
                limits,
                limits.timeout_seconds,
                on_line=None if on_message is None else functools.partial(forward_message, on_message),
            )
        log.info(
            "run runtime=%s id=%s exit=%s duration_ms=%.1f",
            runtime.name,
            request_id,
            finished.exit_code,
            finished.duration_ms,
        )
        return run_answer(finished, limits.timeout_seconds) | {"request_id": request_id}

    async def run_job(self, job: Job) -> dict[str, Any]:
        """Run ``job`` on its runtime or its function's image: its files at /data (read-only), its
        stdin, its timeout."""
        limits = dataclasses.replace(self._config.limits, timeout_seconds=job.timeout)
        async with (
            self.job_image(job) as image,
            unpacked(self._config.bundles_dir, job.tar, self._config.userns_base) as data,
            code_dir(self._config.bundles_dir, {"stdin": job.stdin}) as io_dir,
        ):
            finished = await self._oneshot.run(
                image,
                list(job.args),
                list(job.env),
                [Mount(data, JOB_DATA), Mount(io_dir, IO_DIR)],
                limits,
                job.timeout,
            )
        log.info(
            "job name=%s runtime=%s function=%s exit=%s duration_ms=%.1f",
            job.name,
            job.runtime,
            job.function,
            finished.exit_code,
            finished.duration_ms,
        )
        return {
            "stdout": finished.stdout.decode("utf-8", "replace"),
            "stderr": finished.stderr.decode("utf-8", "replace"),
            "exit_code": finished.exit_code,
            "timed_out": finished.timed_out,
            "duration_ms": finished.duration_ms,
        }

    @asynccontextmanager
    async def job_image(self, job: Job) -> AsyncIterator[RootfsImage]:
        """What ``job`` runs on, in its working dir: its runtime, or its function's current image
        with the job's mount points laid over it (``with_job_mount_points``)."""
        if job.runtime is not None:
            image = self.runtimes.image(self.runtimes.get(job.runtime))
            yield dataclasses.replace(image, config=dataclasses.replace(image.config, working_dir=job.workdir))
            return
        assert job.function is not None, "a job runs on a runtime or a function"
        version, rootfs = await self._functions.current_rootfs(job.function)
        config = dataclasses.replace(version.config, working_dir=job.workdir)
        async with with_job_mount_points(self._config.bundles_dir, rootfs) as composed:
            yield RootfsImage(composed, config, version.uid, version.gid)

    async def check(self, runtime: Runtime, source: Source, limits: Limits, space: Workspace) -> str:
        """Load the code in a container of ``runtime`` as a request's would; its style, or a 400 saying why not."""
        language = LANGUAGES[runtime.language]
        finished = await self._oneshot.run(
            self.runtimes.image(runtime),
            [*language.command, "--check"],
            source.env(language.build),
            space.mounts(),
            limits,
            self._config.build_timeout_seconds,
        )
        if finished.timed_out:
            raise InvalidCode(f"loading {source.entry} took over {self._config.build_timeout_seconds:g} s")
        verdict = last_json_line(finished.stdout)
        if verdict.get("ok") is True:
            return str(verdict.get("style", ""))
        said = verdict.get("error") or finished.stderr.decode(errors="replace").strip()[-1000:] or "no output"
        raise InvalidCode(f"the code cannot serve: {said}")


def refuse_fork(runtime: Runtime, limits: Limits) -> None:
    """``NotATemplate`` for fork mode on a runtime whose language cannot fork (Node has no fork())."""
    language = LANGUAGES[runtime.language]
    if limits.sandbox == "fork" and not language.forks:
        raise NotATemplate(
            f"functions of runtime {runtime.name!r} cannot run with --sandbox fork: a {language.name} process "
            "cannot fork into fresh sandboxes; deploy with --sandbox runc"
        )


@asynccontextmanager
async def with_job_mount_points(parent: Path, rootfs: Path) -> AsyncIterator[Path]:
    """``rootfs`` (a function's, mounted and shared by its containers) with a layer over it that
    holds a job's mount points, /data and /faas/io, as a read-only overlay of its own: runc binds
    onto them and never writes into the shared rootfs, which may not have them. Unmounted and
    removed afterwards."""
    directory = parent / f"job-{uuid.uuid4().hex[:16]}"
    try:
        await asyncio.to_thread(mount_with_job_points, directory, rootfs)
        yield directory / "rootfs"
    finally:
        await asyncio.to_thread(discard, directory)


def mount_with_job_points(directory: Path, rootfs: Path) -> None:
    directory.mkdir(mode=0o711)
    points = directory / "points"
    root = os.stat(rootfs)
    for path in (points, points / JOB_DATA.lstrip("/"), points / "faas", points / IO_DIR.lstrip("/")):
        path.mkdir(mode=0o755)
        os.chown(path, root.st_uid, root.st_gid)  # the rootfs root's owner: container root
        path.chmod(0o755)
    points.chmod(stat.S_IMODE(root.st_mode))  # the composed root looks as the rootfs does
    (directory / "rootfs").mkdir(mode=0o755)
    overlay.mount_layers(directory / "rootfs", [points, rootfs])


async def forward_message(on_message: MessageSink, line: bytes) -> None:
    """Give ``on_message`` the data of a wrapper's ``{"event": "message", "data": ...}`` line;
    any other line (the verdict, or what code wrote on the wrapper's stdout) is no message."""
    try:
        sent = json.loads(line)
    except ValueError:
        return
    if isinstance(sent, dict) and sent.get("event") == "message" and "data" in sent:
        await on_message(sent["data"])


def run_answer(finished: Finished, timeout: float) -> dict[str, Any]:
    """What a run-once answers: the wrapper's verdict with the container's stderr and exit."""
    verdict = last_json_line(finished.stdout)
    answer: dict[str, Any] = {
        "result": verdict.get("result"),
        "stdout": verdict.get("stdout", ""),
        "stderr": finished.stderr.decode("utf-8", "replace"),
        "exit_code": finished.exit_code,
        "duration_ms": finished.duration_ms,
    }
    if finished.timed_out:
        answer["error"] = f"the run took over {timeout:g} s and was killed"
    elif "error" in verdict:
        answer["error"] = verdict["error"]
    elif not verdict:
        answer["error"] = "the runtime's wrapper gave no answer: see stderr"
    return answer


def last_json_line(output: bytes) -> dict[str, Any]:
    """The last line of ``output`` that is a JSON object; {} when there is none."""
    for line in reversed(output.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}
