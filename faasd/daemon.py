"""The daemon's life: refuse to start when it cannot work, recover, serve, drain, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import shutil
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from faasd import daemonlog, metrics
from faasd.admission import Admission, Starts
from faasd.api import serve_api
from faasd.auth import TokenFileError, load_or_create_token
from faasd.config import Config
from faasd.dispatch import Dispatcher
from faasd.errors import FaasError, RuncError
from faasd.functions import Functions
from faasd.gateway import Gateway
from faasd.images import overlay
from faasd.images.layers import LayerStore
from faasd.images.store import ImageStore
from faasd.images.unpack import UnpackLimits
from faasd.logs import Logs
from faasd.network import Aliases, open_listener
from faasd.registry import Registry
from faasd.sandbox import cgroups
from faasd.sandbox.runc import Runc
from faasd.source.functions import SourceFunctions
from faasd.source.runtimes import Runtimes
from faasd.source.sandbox import OneShot

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_FAILED = 3
EXIT_DRAIN_CUT = 4  # a second signal: connections were cut and nothing was cleaned up


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
    for directory in (config.state_dir, config.run_dir):
        closed = first_closed_ancestor(directory)
        if closed is not None:
            raise StartupError(
                f"{closed} is not searchable by other users (mode {closed.stat().st_mode & 0o7777:o}), "
                f"but containers run as unprivileged host uids ({config.userns_base} and up) and must reach "
                f"their rootfs and control socket under {directory}: chmod o+x {closed}, or choose another place"
            )


def first_closed_ancestor(path: Path) -> Path | None:
    """The first existing directory on the way to ``path`` that others may not search, if any."""
    for directory in reversed([path, *path.parents]):
        if not directory.exists():
            return None
        if not directory.stat().st_mode & stat.S_IXOTH:
            return directory
    return None


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


async def remove_leftovers(
    config: Config, runc: Runc, registry: Registry, store: ImageStore, aliases: Aliases, logs: Logs
) -> None:
    """Clear what an earlier faasd left when it died: containers, bundles, uploads, addresses, rootfs, logs."""
    for container_id in await runc.container_ids():
        with contextlib.suppress(RuncError):
            await runc.delete(container_id)
        log.info("removed leftover container id=%s", container_id)
    for directory in (config.bundles_dir, config.uploads_dir):
        await asyncio.to_thread(overlay.unmount_below, directory)  # a job's rootfs (faasd.source)
        shutil.rmtree(directory, ignore_errors=True)
    registered = registry.addresses()
    for ip in await aliases.present():
        if ip in config.ip_range and ip not in registered:
            await aliases.remove(ip)
            log.info("removed leftover address ip=%s", ip)
    known = registered_versions(registry)
    for path in await asyncio.to_thread(store.sweep, known):
        log.info("removed leftover rootfs path=%s", path)
    for path in await logs.sweep(set(known)):
        log.info("removed leftover logs path=%s", path)


async def prepare_cgroups(config: Config) -> None:
    """Sweep the fork-mode cgroups an earlier faasd on this state dir left, and make their parent."""
    parent = cgroups.daemon_parent(config.state_dir)
    try:
        await asyncio.to_thread(cgroups.prepare_parent, parent, cgroups.REMOVE_SECONDS)
    except OSError as exc:  # runc mode needs none of it: fork-mode connections will say what fails
        log.warning("cgroup parent not made parent=%s error=%s", parent, exc)


def registered_versions(registry: Registry) -> dict[str, set[int]]:
    return {f.name: {v.number for v in registry.versions(f.name)} for f in registry.functions()}


def api_token(config: Config) -> str | None:
    """The TCP listener's token, made on its first start; None when there is no TCP listener."""
    if config.listen is None:
        return None
    try:
        return load_or_create_token(config.token_path)
    except TokenFileError as exc:
        raise StartupError(str(exc)) from exc


async def open_api(
    stack: contextlib.AsyncExitStack,
    config: Config,
    functions: Functions,
    logs: Logs,
    layers: LayerStore,
    sources: SourceFunctions,
) -> None:
    """Serve the control API until ``stack`` closes; an address that cannot be bound stops the start."""
    token = api_token(config)
    try:
        await stack.enter_async_context(serve_api(config, functions, logs, layers, token, sources))
    except OSError as exc:
        raise StartupError(
            f"cannot serve the control API: {exc}: free the address or change --socket / --listen"
        ) from exc


async def open_gateway(stack: contextlib.AsyncExitStack, config: Config, functions: Functions) -> None:
    """Serve the gateway (when asked for) until ``stack`` closes."""
    if config.gateway is None:
        return
    try:
        sock = open_listener(config.gateway.host, config.gateway.port)
    except FaasError as exc:
        raise StartupError(f"cannot serve the gateway: {exc.message}: free the address or change --gateway") from exc
    if not config.gateway.host.is_loopback:
        log.warning("gateway on %s, beyond this host: every function is reachable from the network", config.gateway)
    stack.push_async_callback(Gateway(sock, config.gateway_domain, functions.route).close)


def stop_on_signals(drain_seconds: float) -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT; a second one exits at once, non-zero."""
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal=%s: exiting without drain", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(EXIT_DRAIN_CUT)
        log.info("stopping signal=%s drain_seconds=%s", signal.Signals(signum).name, drain_seconds)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop


async def stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT; a second signal skips the drain."""
    runc = Runc(config.runc_binary, config.runc_root)
    store = ImageStore(
        config.images_dir,
        UnpackLimits(max_bytes=config.max_image_bytes, max_entries=config.max_image_entries),
        id_base=config.userns_base,
    )
    for directory in (config.run_dir, config.runc_root, config.images_dir, config.runtimes_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o711)
    store.prepare()
    # Function containers and one-shot ones (runs, jobs, checks) take their slots from one Admission.
    admission = Admission(config.admission)
    oneshot = OneShot(config, runc, admission)
    # Before the leftovers go: the runtimes' layers are kept from then on.
    runtimes = Runtimes(config, store, oneshot)
    registry = Registry(config.database_path, config.ip_range)
    aliases = Aliases()
    logs = Logs(config.logs_dir, config.logs)
    # First: a signal during the clean-up below then stops the daemon in order, not half-way.
    stop = stop_on_signals(config.drain_seconds)
    try:
        await aliases.open()
        await remove_leftovers(config, runc, registry, store, aliases, logs)
        await prepare_cgroups(config)  # once the containers are gone: their children are too
        await asyncio.to_thread(store.mount_all, registered_versions(registry))
        for path in await asyncio.to_thread(runtimes.restore):
            log.info("removed leftover runtime path=%s", path)
        config.bundles_dir.mkdir(mode=0o711, exist_ok=True)
        config.uploads_dir.mkdir(mode=0o700, exist_ok=True)
        functions = Functions(
            config,
            registry,
            store,
            aliases,
            Dispatcher(config, runc, store, Starts.for_machine(config.admission.total, config.start_timeout_seconds)),
            admission,
            logs,
        )
        metrics.sampled(metrics.CONTAINERS, lambda: admission.running)
        metrics.sampled(metrics.QUEUED, lambda: admission.queued)
        metrics.sampled(metrics.WARM, lambda: functions.warm)
        metrics.FUNCTIONS.set_function(lambda: len(functions.all()))  # the registry takes any thread
        try:
            await functions.restore()
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(stop_task, asyncio.create_task(metrics.watch_loop_lag()))
                # Closed in reverse: the gateway, then the functions' listeners stop accepting and
                # drain, and only then the API, which answers (``/healthz``) during the drain.
                sources = SourceFunctions(config, functions, runtimes, oneshot)
                await open_api(stack, config, functions, logs, store.layers, sources)
                stack.push_async_callback(functions.close, config.drain_seconds)
                await open_gateway(stack, config, functions)
                log.info(
                    "ready socket=%s tcp=%s gateway=%s ip_range=%s functions=%d",
                    config.socket_path,
                    config.listen or "off",
                    config.gateway or "off",
                    config.ip_range,
                    len(functions.all()),
                )
                await stop.wait()
        finally:
            await functions.close(config.drain_seconds)  # when the API could not open; else a no-op
            parent = cgroups.daemon_parent(config.state_dir)
            await asyncio.to_thread(cgroups.remove_parent, parent, cgroups.REMOVE_SECONDS)
            await asyncio.to_thread(store.unmount_all)
            await asyncio.to_thread(runtimes.unmount_all)
    finally:
        await logs.close()
        aliases.close()
        registry.close()
    log.info("stopped")


def raise_fd_limit() -> None:
    """Every waiting connection holds an fd: take the hard limit, not the 1024 of a login shell."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_for_children_by_pidfd() -> None:
    """Learn of each ``runc run``'s exit through a pidfd on the event loop, not through the
    thread per child that Python 3.11 starts by default (3.12 chooses pidfds by itself)."""
    if sys.version_info < (3, 12):
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


def run(config: Config) -> int:
    """Start the daemon and return its exit code."""
    daemonlog.configure(config.log_file)
    try:
        check_prerequisites(config)
        raise_fd_limit()
        wait_for_children_by_pidfd()
        with state_lock(config):
            asyncio.run(serve(config))
    except StartupError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP_FAILED
    return EXIT_OK
