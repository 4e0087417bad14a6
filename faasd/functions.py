"""Deployed functions at run time: each one's address, listener and current version.

``Functions`` is the one place that changes a function, keeping the registry (the truth),
the rootfs on disk, the loopback alias and the listening socket in step, and undoing the
earlier steps when a later one fails, so no half-deployed function is ever left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter, defaultdict
from http import HTTPStatus
from pathlib import Path

from faasd import metrics
from faasd.admission import Admission, Overloaded
from faasd.config import Config
from faasd.dispatch import Dispatcher
from faasd.errors import FaasError, NotFound
from faasd.images.store import ImageStore
from faasd.limits import Limits
from faasd.logs import FunctionLog, Logs
from faasd.network import Aliases, open_listener
from faasd.pool import WarmPool
from faasd.registry import Function, Registry, Version, validate_name
from faasd.replies import send_error

log = logging.getLogger(__name__)


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
        self._accepting = asyncio.create_task(self._accept_loop())

    @property
    def version(self) -> Version:
        return self.pool.version

    def switch(self, version: Version) -> None:
        """Serve new connections with ``version``; the old version's warm containers are stopped."""
        old, self.pool = self.pool, self._open_pool(version)
        task = asyncio.create_task(self._close_pool(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _open_pool(self, version: Version) -> WarmPool:
        self._running[version.number] += 1
        template = self._dispatcher.template(version)
        return WarmPool(
            version,
            lambda: self._dispatcher.instance(version, template, self._function_log),
            self._admission,
            self._warm_idle_seconds,
        )

    async def _close_pool(self, pool: WarmPool) -> None:
        try:
            await pool.close()
        finally:
            await self._release(pool.version.number)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(self._sock)
            except OSError as exc:
                # Out of fds or memory: back off rather than spin, and keep listening.
                log.warning("accept failed function=%s error=%s", self.version.function, exc)
                await asyncio.sleep(0.1)
                continue
            self.adopt(client, peer)

    def adopt(self, client: socket.socket, peer: tuple[str, int]) -> None:
        """Serve ``client``, accepted here or by the gateway, with the current version."""
        # Counted here, not in the task: a redeploy may retire the version before the task runs.
        self._running[self.version.number] += 1
        task = asyncio.create_task(self._serve(self.pool, client, peer))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve(self, pool: WarmPool, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            await self._admit_and_dispatch(pool, client, peer)
        finally:
            await self._release(pool.version.number)

    async def _admit_and_dispatch(self, pool: WarmPool, client: socket.socket, peer: tuple[str, int]) -> None:
        function = pool.version.function
        with client:
            instance = pool.take()
            metrics.CONTAINER_PATH.labels(function, "cold" if instance is None else "warm").inc()
            try:
                if instance is None:
                    await self._admission.acquire(function)
                    instance = pool.new_instance()
            except Overloaded as exc:
                log.warning("refused function=%s peer=%s:%s reason=%s", function, *peer, exc.reason)
                metrics.REQUESTS.labels(function, str(HTTPStatus.SERVICE_UNAVAILABLE.value)).inc()
                metrics.ERRORS.labels("overloaded").inc()
                await send_error(client, HTTPStatus.SERVICE_UNAVAILABLE, exc.reason, retry_after=exc.retry_after)
                return
            pool.refill()
            kept = False
            try:
                kept = await self._dispatcher.serve(instance, client, peer)
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
        await self._close_pool(self.pool)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=drain_seconds)
            for task in pending:
                task.cancel()
            if pending:
                log.info("drain cut function=%s connections=%d", self.version.function, len(pending))
                await asyncio.wait(pending)
        if self._closing:
            await asyncio.wait(set(self._closing))


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
        admission.reclaim = self._shed_warm_container
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def list(self) -> list[Function]:
        return self._registry.list()

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

    def route(self, name: str, client: socket.socket, peer: tuple[str, int]) -> None:
        """Give ``client`` to function ``name``'s listener, as if it had accepted it."""
        listener = self._listeners.get(name)
        if listener is None:
            raise NotFound(f"no function named {name!r}")
        listener.adopt(client, peer)

    async def restore(self) -> None:
        """Bring back the address and listener of every registered function (at start-up)."""
        for function in self._registry.list():
            try:
                self._store.check_servable(function.name, function.current.number)
                await self._expose(function)
            except FaasError as exc:
                # One unservable function (its port taken, say) must not keep the others down.
                log.error("cannot restore function=%s ip=%s error=%s", function.name, function.ip, exc.message)
                continue
            log.info("restored function=%s version=%s ip=%s", function.name, function.current.number, function.ip)

    async def deploy(self, name: str, archive: Path, image: str, tag: str | None, limits: Limits) -> Function:
        """Import ``archive`` as a new version of ``name``, whose containers get ``limits``,
        and switch new connections to it."""
        validate_name(name)
        async with self._locks[name]:
            number = self._registry.next_version(name)
            metrics.IMPORT_BYTES.inc(archive.stat().st_size)
            with metrics.IMPORT_DURATION.time():
                imported = await asyncio.to_thread(self._store.import_image, archive, name, number, tag)
            try:
                function = await asyncio.to_thread(
                    self._registry.add_version,
                    name,
                    number,
                    image,
                    imported.digest,
                    imported.config,
                    imported.uid,
                    imported.gid,
                    limits,
                )
            except BaseException:
                await asyncio.to_thread(self._store.remove_version, name, number)
                raise
            try:
                await self._expose(function)
            except BaseException:
                if number == 1:
                    await asyncio.to_thread(self._registry.remove, name)
                    await asyncio.to_thread(self._store.remove_function, name)
                raise
            await self._prune(name)
        log.info("deployed function=%s version=%s ip=%s image=%s", name, number, function.ip, image)
        return function

    async def remove(self, name: str) -> Function:
        """Remove ``name``: its registry rows, listener (ending its connections), address, rootfs, logs."""
        validate_name(name)
        async with self._locks[name]:
            function = await asyncio.to_thread(self._registry.remove, name)
            listener = self._listeners.pop(name, None)
            if listener is not None:
                await listener.close(drain_seconds=0)
            await self._aliases.remove(function.ip)
            await asyncio.to_thread(self._store.remove_function, name)
            await self._logs.remove(name)
        log.info("removed function=%s ip=%s", name, function.ip)
        return function

    async def close(self, drain_seconds: float) -> None:
        """Stop every listener (draining in parallel) and remove the addresses (at shutdown)."""
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

    async def _prune(self, name: str) -> None:
        """Keep the newest ``keep_versions`` versions of ``name``; retire the older ones."""
        versions = self._registry.versions(name)
        old = [v.number for v in versions[: -self._config.keep_versions]]
        if old:
            await asyncio.to_thread(self._registry.forget_versions, name, old)
            await self._listeners[name].retire(old)
