"""Deployed functions at run time: each one's address, listener and current version.

``Functions`` is the one place that changes a function, keeping the registry (the truth),
the rootfs on disk, the loopback alias and the listening socket in step, and undoing the
earlier steps when a later one fails, so no half-deployed function is ever left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path

from faasd import metrics
from faasd.admission import Admission, Overloaded
from faasd.check import check_handler
from faasd.config import Config
from faasd.daemonlog import Throttle
from faasd.dispatch import Dispatcher
from faasd.environment import with_environment
from faasd.errors import Conflict, FaasError, NotFound, RuntimeFailure
from faasd.images.archive import ImageConfig
from faasd.images.store import ImageStore, ImportedImage
from faasd.limits import Limits
from faasd.logs import FunctionLog, Logs
from faasd.network import Aliases, open_listener
from faasd.paths import Target
from faasd.pool import WarmPool
from faasd.registry import Function, Registry, Version, validate_name
from faasd.replies import send_error
from faasd.sandbox.fork import ForkPool, Templates

log = logging.getLogger(__name__)
# Any client can make a busy daemon refuse connection after connection: the log gets a few lines.
REFUSALS = Throttle(log)

Adopt = Callable[[socket.socket, tuple[str, int]], None]


class SameImage(Conflict):
    """Raised when a deploy brings the image and limits the current version already has."""

    function: Function  # as it stays

    @classmethod
    def of(cls, function: Function) -> SameImage:
        number = function.current.number
        same = cls(f"same image as version {number}, which stays current: nothing deployed (force=1 adds it)")
        same.function = function
        return same


async def accept_connections(sock: socket.socket, adopt: Adopt, function: str) -> None:
    """Accept on ``sock`` until cancelled, handing each connection to ``adopt``."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            client, peer = await loop.sock_accept(sock)
        except OSError as exc:
            # Out of fds or memory: back off rather than spin, and keep listening.
            log.warning("accept failed function=%s error=%s", function, exc)
            await asyncio.sleep(0.1)
            continue
        adopt(client, peer)


class Listener:
    """Accepts connections on one function's address; each one goes to a container of its own.

    Each version served keeps a warm pool (``faasd.pool``); ``switch`` to a new version (a
    redeploy) closes the old one's. Connections accepted afterwards get the new rootfs, those
    already running finish on the one they started with. A retired version's rootfs is removed
    only once nothing runs on it, its pool included: removing it earlier would pull the files
    (and the mounts under them) from under a running handler.
    """

    def __init__(
        self,
        function: Function,
        sock: socket.socket,
        dispatcher: Dispatcher,
        admission: Admission,
        store: ImageStore,
        function_log: FunctionLog,
        warm_idle_seconds: float,
    ) -> None:
        self.ip = function.ip
        self._sock = sock
        self._dispatcher = dispatcher
        self._admission = admission
        self._store = store
        self._function_log = function_log
        self._warm_idle_seconds = warm_idle_seconds
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._running: Counter[int] = Counter()  # version number -> connections and pools using it
        self._retired: set[int] = set()  # versions to remove when nothing uses them any more
        self.pool = self._open_pool(function.current)
        self._pinned: dict[int, WarmPool] = {}  # pools of other versions, reached on their own address
        self._accepting = asyncio.create_task(accept_connections(sock, self.adopt, function.name))

    @property
    def version(self) -> Version:
        return self.pool.version

    def switch(self, version: Version) -> None:
        """Serve new connections with ``version``; the old version's warm containers are stopped."""
        pinned = self._pinned.pop(version.number) if version.number in self._pinned else None
        old, self.pool = self.pool, pinned or self._open_pool(version)
        self._close_in_background(old)

    def _open_pool(self, version: Version) -> WarmPool:
        pool: WarmPool
        if version.limits.sandbox == "fork":
            spec = self._dispatcher.fork_spec(version)
            templates = Templates(
                version,
                lambda: self._dispatcher.fork_template(version, spec, self._function_log),
                self._warm_idle_seconds,
            )
            pool = ForkPool(
                templates,
                lambda: self._dispatcher.fork_connection(templates, self._function_log),
                self._admission,
                self._warm_idle_seconds,
                self._dispatcher.fork_start_bound,
            )
        else:
            template = self._dispatcher.template(version)
            pool = WarmPool(
                version,
                lambda: self._dispatcher.instance(version, template, self._function_log),
                self._admission,
                self._warm_idle_seconds,
                self._dispatcher.start_bound,
            )
        self._running[version.number] += 1  # once nothing can fail: the pool's close takes it back
        return pool

    def _pool_for(self, version: Version) -> WarmPool:
        if version.number == self.version.number:
            return self.pool
        if version.number not in self._pinned:
            self._pinned[version.number] = self._open_pool(version)
        return self._pinned[version.number]

    def _close_in_background(self, pool: WarmPool) -> None:
        task = asyncio.create_task(self._close_pool(pool))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_pool(self, pool: WarmPool) -> None:
        try:
            await pool.close()
        finally:
            await self._release(pool.version.number)

    def adopt(
        self, client: socket.socket, peer: tuple[str, int], version: Version | None = None, prefix: str = ""
    ) -> None:
        """Serve ``client``, accepted here, by the gateway or on a version's own address, with
        ``version`` (by default the current one); ``prefix`` is the path the gateway routed it by."""
        pool = self._pool_for(self.version if version is None else version)
        # Counted here, not in the task: a redeploy may retire the version before the task runs.
        self._running[pool.version.number] += 1
        task = asyncio.create_task(self._serve(pool, client, peer, prefix))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve(self, pool: WarmPool, client: socket.socket, peer: tuple[str, int], prefix: str) -> None:
        try:
            await self._admit_and_dispatch(pool, client, peer, prefix)
        finally:
            await self._release(pool.version.number)

    async def _admit_and_dispatch(
        self, pool: WarmPool, client: socket.socket, peer: tuple[str, int], prefix: str
    ) -> None:
        function = pool.version.function
        with client:
            try:
                instance, ready = await pool.claim()
            except Overloaded as exc:
                REFUSALS.log(logging.WARNING, "refused function=%s peer=%s:%s reason=%s", function, *peer, exc.reason)
                metrics.REQUESTS.labels(function, str(HTTPStatus.SERVICE_UNAVAILABLE.value)).inc()
                metrics.ERRORS.labels("overloaded").inc()
                await send_error(client, HTTPStatus.SERVICE_UNAVAILABLE, exc.reason, retry_after=exc.retry_after)
                return
            # A refused connection had no container.
            metrics.CONTAINER_PATH.labels(function, "warm" if ready else "cold").inc()
            pool.refill()
            kept = False
            try:
                kept = await self._dispatcher.serve(instance, client, peer, prefix)
            except Exception:
                log.exception("connection failed function=%s version=%s", function, pool.version.number)
            finally:
                if kept:
                    pool.give_back(instance)  # its slot goes back with it
                else:
                    self._admission.release(function)

    async def _release(self, number: int) -> None:
        self._running[number] -= 1
        if not self._running[number]:
            del self._running[number]
            if number in self._retired:
                await self.retire([number])

    async def retire(self, numbers: list[int]) -> None:
        """Remove the rootfs of versions no longer registered, each once nothing uses it."""
        for number in numbers:
            if number in self._pinned:
                self._close_in_background(self._pinned.pop(number))
            if self._running[number]:
                self._retired.add(number)
            else:
                self._retired.discard(number)
                await asyncio.to_thread(self._store.remove_version, self.version.function, number)

    async def close(self, drain_seconds: float) -> None:
        """Stop accepting, let running connections finish for ``drain_seconds``, end the rest."""
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        self._sock.close()
        # Beside the drain, not before it: a fork-mode template closes once its connections end.
        pools = asyncio.gather(*(self._close_pool(pool) for pool in [self.pool, *self._pinned.values()]))
        self._pinned.clear()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=drain_seconds)
            for task in pending:
                task.cancel()
            if pending:
                log.info("drain cut function=%s connections=%d", self.version.function, len(pending))
                await asyncio.wait(pending)
        await pools
        if self._closing:
            await asyncio.wait(set(self._closing))


class VersionListener:
    """Accepts connections on one version's own address, for testing it apart from live traffic.

    Its connections are served by the function's ``Listener``, pinned to this version, so they
    are counted there with the others and the rootfs outlives the last of them.
    """

    def __init__(self, version: Version, ip: ipaddress.IPv4Address, sock: socket.socket, listener: Listener) -> None:
        self.version = version
        self.ip = ip
        self._sock = sock
        adopt = functools.partial(listener.adopt, version=version)
        self._accepting = asyncio.create_task(accept_connections(sock, adopt, version.function))

    async def close(self) -> None:
        """Stop accepting; connections already accepted run on in the function's listener."""
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        self._sock.close()


class Functions:
    """Deploys, removes and restores functions; serialises changes to the same name."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        store: ImageStore,
        aliases: Aliases,
        dispatcher: Dispatcher,
        admission: Admission,
        logs: Logs,
    ) -> None:
        self._config = config
        self._admission = admission
        self._registry = registry
        self._store = store
        self._aliases = aliases
        self._dispatcher = dispatcher
        self._logs = logs
        self._listeners: dict[str, Listener] = {}
        self._version_listeners: dict[tuple[str, int], VersionListener] = {}
        admission.reclaim = self._shed_warm_container
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def all(self) -> list[Function]:
        return self._registry.functions()

    @property
    def warm(self) -> int:
        """Containers ready in warm pools, all functions."""
        return sum(listener.pool.ready for listener in self._listeners.values())

    def _shed_warm_container(self) -> bool:
        """Stop one ready warm container, from the fullest pool: a waiting connection needs its slot."""
        pools = [listener.pool for listener in self._listeners.values() if listener.pool.ready]
        return bool(pools) and max(pools, key=lambda pool: pool.ready).shed()

    def get(self, name: str) -> Function:
        return self._registry.get(validate_name(name))

    async def current_rootfs(self, name: str) -> tuple[Version, Path]:
        """The current version of ``name`` and its mounted rootfs, refused unless containers can
        run from it (a job's one-shot container runs on it, ``faasd.source``)."""
        version = self.get(name).current
        await asyncio.to_thread(self._store.check_servable, name, version.number)
        return version, self._store.rootfs(name, version.number)

    def versions(self, name: str) -> list[Version]:
        """The kept versions of ``name``, oldest first."""
        return self._registry.versions(validate_name(name))

    def route(self, target: Target, client: socket.socket, peer: tuple[str, int]) -> None:
        """Give ``client`` to the listener of the function ``target`` names, as if it had accepted
        it: to its current version, or to the one uploaded at ``target.uploaded_at``."""
        listener = self._listeners.get(target.function)
        if listener is None:
            raise NotFound(f"no function named {target.function!r}")
        version = None if target.uploaded_at is None else self._uploaded_at(target.function, target.uploaded_at)
        listener.adopt(client, peer, version, target.prefix)

    def _uploaded_at(self, name: str, timestamp: int) -> Version:
        """The last version of ``name`` uploaded in the second ``timestamp`` (go-faas's version)."""
        versions = self._registry.versions(name)  # the registry's snapshot: no wait on the loop
        matching = [version for version in versions if int(version.created) == timestamp]
        if not matching:
            kept = ", ".join(str(int(version.created)) for version in versions)
            raise NotFound(f"{name!r} has no version uploaded at {timestamp}: the kept ones were uploaded at {kept}")
        return matching[-1]

    async def restore(self) -> None:
        """Bring back the address and listener of every registered function (at start-up)."""
        for function in self._registry.functions():
            try:
                await asyncio.to_thread(self._store.check_servable, function.name, function.current.number)
                await self._expose(function)
            except FaasError as exc:
                # One unservable function (its port taken, say) must not keep the others down.
                log.error("cannot restore function=%s ip=%s error=%s", function.name, function.ip, exc.message)
                continue
            log.info("restored function=%s version=%s ip=%s", function.name, function.current.number, function.ip)
            for version in self._registry.versions(function.name):
                if version.ip is not None:
                    await self._restore_version(version)

    async def _restore_version(self, version: Version) -> None:
        try:
            await asyncio.to_thread(self._store.check_servable, version.function, version.number)
            await self._expose_version(version)
        except FaasError as exc:
            log.error(
                "cannot restore function=%s version=%s ip=%s error=%s",
                version.function,
                version.number,
                version.ip,
                exc.message,
            )
            return
        log.info("restored function=%s version=%s ip=%s pinned=true", version.function, version.number, version.ip)

    def same_image(self, name: str, digest: str, config: ImageConfig, limits: Limits) -> Function | None:
        """``name`` as it is, if its current version has this image, environment and limits."""
        current = self._current(name)
        if current is None or (current.digest, current.config, current.limits) != (digest, config, limits):
            return None
        return self._registry.get(name)

    async def deploy(
        self,
        name: str,
        archive: Path,
        image: str,
        tag: str | None,
        limits: Limits,
        force: bool = False,
        environment: Mapping[str, str] | None = None,
        pulled: str | None = None,
        check: bool = False,
    ) -> Function:
        """Import ``archive`` as a new version of ``name``, whose containers get ``limits`` and
        ``environment`` over the image's own, and switch new connections to it. ``pulled`` is
        the manifest digest of an image pulled from a registry.

        The image the current version already has, with the same environment and limits, is no
        new version unless ``force``: it would only push an older, real rollback target out of the
        kept ones. ``SameImage`` says so, and nothing changes.

        With ``check``, one container of the new version must get ready before it is registered
        (``faasd.check``): ``CheckFailed`` otherwise, and nothing changes either.
        """
        validate_name(name)
        async with self._locks[name]:
            number = self._registry.next_version(name)
            before = self._current(name)
            metrics.IMPORT_BYTES.inc(archive.stat().st_size)
            with metrics.IMPORT_DURATION.time():
                imported = await asyncio.to_thread(self._store.import_image, archive, name, number, tag)
            config = with_environment(imported.config, environment or {})
            if not force and (same := self.same_image(name, imported.digest, config, limits)) is not None:
                await asyncio.to_thread(self._store.remove_version, name, number)
                log.info(
                    "deploy unchanged function=%s same_as=%s digest=%s", name, same.current.number, imported.digest
                )
                raise SameImage.of(same)
            if check:
                candidate = Version(
                    name, number, image, imported.digest, config, imported.uid, imported.gid, time.time(), limits
                )
                try:
                    await check_handler(self._dispatcher, candidate, self._logs.get(name))
                except BaseException:
                    if number == 1:  # no function: no rootfs dir and no log (the refusal quotes it)
                        await asyncio.to_thread(self._store.remove_function, name)
                        await self._logs.remove(name)
                    else:
                        await asyncio.to_thread(self._store.remove_version, name, number)
                    raise
            try:
                if limits.sandbox == "fork":
                    await self._check_template(name, number, image, imported, config, limits)
                function = await asyncio.to_thread(
                    self._registry.add_version,
                    name,
                    number,
                    image,
                    imported.digest,
                    config,
                    imported.uid,
                    imported.gid,
                    limits,
                    pulled,
                )
            except BaseException:
                await asyncio.to_thread(self._store.remove_version, name, number)
                raise
            try:
                await self._expose(function)
            except BaseException:
                await self._undo_version(name, number, before)
                raise
            await self._prune(name)
        log.info("deployed function=%s version=%s ip=%s image=%s", name, number, function.ip, image)
        return function

    async def _undo_version(self, name: str, number: int, before: Version | None) -> None:
        """Forget version ``number``, registered but never served, so that the registry agrees
        with the listener again: on ``before``, or on nothing for a first deploy."""
        if before is None:
            await asyncio.to_thread(self._registry.remove, name)
            await asyncio.to_thread(self._store.remove_function, name)
            return
        await asyncio.to_thread(self._registry.set_current, name, before.number)
        await asyncio.to_thread(self._registry.forget_versions, name, [number])
        await asyncio.to_thread(self._store.remove_version, name, number)

    async def _check_template(
        self, name: str, number: int, image: str, imported: ImportedImage, config: ImageConfig, limits: Limits
    ) -> None:
        """Refuse (``NotATemplate``) a fork-mode version whose handler does not become a template."""
        version = Version(name, number, image, imported.digest, config, imported.uid, imported.gid, time.time(), limits)
        try:
            await self._dispatcher.check_template(version, self._logs.get(name))
        except BaseException:
            if self._current(name) is None:  # a first version: no log of a function that never was
                await self._logs.remove(name)
            raise

    def _current(self, name: str) -> Version | None:
        try:
            return self._registry.get(name).current
        except NotFound:
            return None

    async def rollback(self, name: str, number: int | None = None) -> Function:
        """Make kept version ``number`` (by default the highest below the current one) current.

        Nothing is imported: new connections get that version's rootfs at once, and those
        already running finish on theirs.
        """
        validate_name(name)
        async with self._locks[name]:
            before = self._registry.get(name).current.number
            if number is None:
                earlier = [v.number for v in self._registry.versions(name) if v.number < before]
                if not earlier:
                    raise Conflict(f"{name!r} has no version before {before} to roll back to (faas versions {name})")
                number = max(earlier)
            self._registry.version(name, number)  # 404 for a version not kept
            await asyncio.to_thread(self._store.check_servable, name, number)
            function = await asyncio.to_thread(self._registry.set_current, name, number)
            listener = self._listeners.get(name)
            try:
                if listener is not None:
                    listener.switch(function.current)
            except BaseException:  # the listener serves the version it did: so must the registry
                await asyncio.to_thread(self._registry.set_current, name, before)
                raise
        log.info("rolled back function=%s from=%s to=%s", name, before, number)
        return function

    async def version_address(self, name: str, number: int) -> Version:
        """Version ``number`` of ``name`` with its own address, which serves only that version.

        Given from the range on the first call and kept in the registry, so it is the same
        afterwards and after a restart; freed when the version is pruned or the function removed.
        """
        validate_name(name)
        async with self._locks[name]:
            version, fresh = await asyncio.to_thread(self._registry.assign_address, name, number)
            if (name, number) in self._version_listeners:
                return version
            try:
                await asyncio.to_thread(self._store.check_servable, name, number)
                await self._expose_version(version)
            except BaseException:
                if fresh:
                    await asyncio.to_thread(self._registry.release_address, name, number)
                raise
        log.info("version address function=%s version=%s ip=%s", name, number, version.ip)
        return version

    async def remove(self, name: str) -> Function:
        """Remove ``name``: its registry rows, listeners (ending their connections), addresses, rootfs, logs."""
        validate_name(name)
        async with self._locks[name]:
            versions = self._registry.versions(name)
            function = await asyncio.to_thread(self._registry.remove, name)
            for version in versions:
                await self._conceal_version(version)
            listener = self._listeners.pop(name, None)
            if listener is not None:
                await listener.close(drain_seconds=0)
            await self._aliases.remove(function.ip)
            await asyncio.to_thread(self._store.remove_function, name)
            await self._logs.remove(name)
            metrics.forget(name)  # after the listener closed: no connection of it is left to count
        log.info("removed function=%s ip=%s", name, function.ip)
        return function

    async def close(self, drain_seconds: float) -> None:
        """Stop every listener (draining in parallel) and remove the addresses (at shutdown)."""
        for version_listener in list(self._version_listeners.values()):
            await self._conceal_version(version_listener.version)
        listeners = list(self._listeners.values())
        self._listeners.clear()
        await asyncio.gather(*(listener.close(drain_seconds) for listener in listeners))
        for listener in listeners:
            await self._aliases.remove(listener.ip)

    async def _expose(self, function: Function) -> None:
        listener = self._listeners.get(function.name)
        if listener is not None:
            listener.switch(function.current)
            return
        await self._aliases.add(function.ip)
        try:
            sock = open_listener(function.ip, self._config.port)
        except BaseException:
            await self._aliases.remove(function.ip)
            raise
        self._listeners[function.name] = Listener(
            function,
            sock,
            self._dispatcher,
            self._admission,
            self._store,
            self._logs.get(function.name),
            self._config.warm_idle_seconds,
        )

    async def _expose_version(self, version: Version) -> None:
        """Open ``version``'s own address, its connections served by the function's listener."""
        ip = version.ip
        if ip is None:
            raise ValueError(f"version {version.number} of {version.function!r} has no address of its own")
        listener = self._listeners.get(version.function)
        if listener is None:
            raise RuntimeFailure(f"{version.function!r} is not being served (see the faasd log): deploy it again")
        await self._aliases.add(ip)
        try:
            sock = open_listener(ip, self._config.port)
        except BaseException:
            await self._aliases.remove(ip)
            raise
        self._version_listeners[version.function, version.number] = VersionListener(version, ip, sock, listener)

    async def _conceal_version(self, version: Version) -> None:
        """Close ``version``'s own address, if it has one open; its running connections go on."""
        version_listener = self._version_listeners.pop((version.function, version.number), None)
        if version_listener is not None:
            await version_listener.close()
            await self._aliases.remove(version_listener.ip)

    async def _prune(self, name: str) -> None:
        """Keep the newest ``keep_versions`` versions of ``name``; retire the older ones and
        free their own addresses."""
        versions = self._registry.versions(name)
        old = [v.number for v in versions[: -self._config.keep_versions]]
        if old:
            forgotten = await asyncio.to_thread(self._registry.forget_versions, name, old)
            for version in forgotten:
                await self._conceal_version(version)
            await self._listeners[name].retire([v.number for v in forgotten])
