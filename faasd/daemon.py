"""The daemon's life: refuse to start when it cannot work, recover, serve, drain, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from typing import IO

from faasd.api import serve_api
from faasd.config import Config
from faasd.dispatch import Dispatcher
from faasd.errors import RuncError
from faasd.functions import Functions
from faasd.images.store import ImageStore
from faasd.images.unpack import UnpackLimits
from faasd.network import Aliases
from faasd.registry import Registry
from faasd.sandbox.runc import Runc

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_FAILED = 3


class StartupError(Exception):
    """The daemon cannot start; the message says what to do."""


# sun_path holds 108 bytes; a control socket is RUN_DIR/bundles/<16 hex>/control.sock.
MAX_RUN_DIR_CHARS = 107 - len("/bundles/0123456789abcdef/control.sock")


def check_prerequisites(config: Config) -> None:
    """Refuse to start, with the remedy, when faasd could not serve a single request."""
    if os.geteuid() != 0:
        raise StartupError("faasd must run as root (it manages loopback addresses and runc): try sudo faasd")
    if shutil.which(config.runc_binary) is None:
        raise StartupError(
            f"runc not found (looked for {config.runc_binary!r}): install it (apt-get install runc) "
            "or point --runc at it"
        )
    if len(str(config.run_dir)) > MAX_RUN_DIR_CHARS:
        raise StartupError(
            f"--run-dir {config.run_dir} is too long for unix socket paths: "
            f"use one of at most {MAX_RUN_DIR_CHARS} characters"
        )


@contextlib.contextmanager
def state_lock(config: Config) -> Iterator[IO[str]]:
    """Hold an exclusive lock on the state dir for the daemon's whole life."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    with open(config.lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise StartupError(
                f"another faasd (pid {holder}) is using {config.state_dir}: stop it first, "
                "or give this one its own --state-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield lock


async def remove_leftovers(config: Config, runc: Runc, registry: Registry, store: ImageStore, aliases: Aliases) -> None:
    """Clear what an earlier faasd left when it died: containers, bundles, uploads, addresses, rootfs."""
    for container_id in await runc.list():
        with contextlib.suppress(RuncError):
            await runc.delete(container_id)
        log.info("removed leftover container id=%s", container_id)
    for directory in (config.bundles_dir, config.uploads_dir):
        shutil.rmtree(directory, ignore_errors=True)
    functions = registry.list()
    registered = {f.ip for f in functions}
    for ip in await aliases.present():
        if ip in config.ip_range and ip not in registered:
            await aliases.remove(ip)
            log.info("removed leftover address ip=%s", ip)
    known = {f.name: {v.number for v in registry.versions(f.name)} for f in functions}
    for path in await asyncio.to_thread(store.sweep, known):
        log.info("removed leftover rootfs path=%s", path)


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT; a second signal skips the drain."""
    runc = Runc(config.runc_binary, config.runc_root)
    store = ImageStore(config.images_dir, UnpackLimits(max_bytes=config.max_image_bytes))
    for directory in (config.run_dir, config.runc_root, config.images_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o711)
    registry = Registry(config.database_path, config.ip_range)
    aliases = Aliases()
    try:
        await aliases.open()
        await remove_leftovers(config, runc, registry, store, aliases)
        config.bundles_dir.mkdir(mode=0o711, exist_ok=True)
        config.uploads_dir.mkdir(mode=0o700, exist_ok=True)
        functions = Functions(config, registry, store, aliases, Dispatcher(config, runc, store))
        await functions.restore()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second signal=%s: exiting without drain", signal.Signals(signum).name)
                os._exit(EXIT_OK)
            log.info("stopping signal=%s drain_seconds=%s", signal.Signals(signum).name, config.drain_seconds)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            async with serve_api(config, functions):
                log.info(
                    "ready socket=%s ip_range=%s functions=%d",
                    config.socket_path,
                    config.ip_range,
                    len(functions.list()),
                )
                await stop.wait()
        finally:
            await functions.close(config.drain_seconds)
    finally:
        aliases.close()
        registry.close()
    log.info("stopped")


def run(config: Config) -> int:
    """Start the daemon and return its exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        check_prerequisites(config)
        with state_lock(config):
            asyncio.run(serve(config))
    except StartupError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP_FAILED
    return EXIT_OK
