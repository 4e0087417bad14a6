"""The layer store: each image layer unpacked once, named by its diff_id, shared by every version.

``layers/sha256/<hex>/`` holds the layer whose uncompressed tar hashes to ``sha256:<hex>``, in
the form overlayfs reads (see ``faasd.images.overlay``). A layer the store holds is recognised
by the diff_id the image config states before a byte of it is read, and never unpacked again.

A layer is unpacked into a hidden temporary directory, synced, and renamed into place only once
its digests checked out: a crash or a refused layer leaves no half layer under its name. Two
imports unpacking the same new layer at once both finish; the first rename wins and the other
copy is discarded (a rename onto a non-empty directory fails).

A layer goes when no version lists it any more (``collect``). An import holds the layers it uses
from the moment it looks one up until its version's list of layers is on disk (``LayerSession``),
so a removal running meanwhile cannot collect a layer an import is about to use.

The directories are root's alone (0700): overlayfs reaches lower layers with the credentials of
whoever mounted it, so containers need no way through to them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from faasd.errors import Conflict, FaasError, InvalidImage
from faasd.images.archive import ImageArchive
from faasd.images.tree import remove_or_log
from faasd.images.unpack import Budget, apply_layer

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
PRIVATE = 0o700
DIFF_ID = re.compile(r"sha256:([0-9a-f]{64})")


class LayerStore:
    """``directory`` (``STATE/layers``): layers by diff_id, owned by ids shifted by ``id_base``."""

    def __init__(self, directory: Path, id_base: int) -> None:
        self.directory = directory
        self._id_base = id_base
        self._lock = threading.Lock()  # lookups and pins of imports against collect
        self._pinned: Counter[str] = Counter()
        self.owners: list[Path] = []  # the dirs of version dirs whose layer lists keep layers here

    def path(self, diff_id: str) -> Path:
        match = DIFF_ID.fullmatch(diff_id)
        if match is None:
            raise InvalidImage(f"unsupported or malformed diff_id {diff_id!r} (sha256:<64 hex digits> expected)")
        return self.directory / "sha256" / match[1]

    @contextlib.contextmanager
    def session(self) -> Iterator[LayerSession]:
        """One import's hold on the layers it uses, released when the block ends."""
        session = LayerSession(self)
        try:
            yield session
        finally:
            with self._lock:
                self._pinned -= Counter(session.held)

    def collect(self, referenced: Callable[[], set[str]]) -> list[Path]:
        """Remove every layer not in ``referenced()`` (called under the lock) nor held by an import."""
        layers_dir = self.directory / "sha256"
        if not layers_dir.is_dir():
            return []
        removed: dict[Path, Path] = {}
        with self._lock:
            keep = referenced() | set(self._pinned)
            for layer in layers_dir.iterdir():
                if f"sha256:{layer.name}" not in keep:
                    # Out of sight first: a lookup must never find a layer half removed.
                    removed[layer] = layer.rename(self.directory / f"{TEMP_PREFIX}gone-{uuid.uuid4().hex}")
                    log.info("layer removed diff_id=sha256:%s", layer.name)
        for doomed in removed.values():
            remove_or_log(doomed)  # what stays is the next start-up's sweep's
        return list(removed)

    def sweep(self) -> list[Path]:
        """Remove what a crash left: half-unpacked and half-removed layers; what went. Only at
        start-up; what cannot be removed is logged and left."""
        if not self.directory.is_dir():
            return []
        doomed = [path for path in self.directory.iterdir() if path.name.startswith(TEMP_PREFIX)]
        return [path for path in doomed if remove_or_log(path)]

    def holds(self, diff_id: str) -> bool:
        """Whether the store holds the layer ``diff_id`` (a malformed one it cannot hold)."""
        return DIFF_ID.fullmatch(diff_id) is not None and self.path(diff_id).is_dir()

    def _hold(self, diff_id: str) -> bool:
        """Keep ``diff_id`` from being collected; whether the store holds it already."""
        path = self.path(diff_id)
        with self._lock:
            self._pinned[diff_id] += 1
            return path.is_dir()

    def unpack_layer(self, archive: ImageArchive, number: int, budget: Budget, hold: Callable[[str], object]) -> str:
        """Unpack layer ``number`` of ``archive`` and move it into place; its diff_id.

        ``hold`` is given the diff_id once measured, before the layer gets its name.
        """
        for directory in (self.directory, self.directory / "sha256"):
            directory.mkdir(mode=PRIVATE, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.directory))
        try:
            os.chown(work, self._id_base, self._id_base)
            work.chmod(0o755)
            try:
                with archive.open_layer(number) as layer:
                    apply_layer(layer, work, budget, self._id_base)
            except FaasError as exc:
                raise exc.in_context(f"layer {number}") from exc
            diff_id = archive.diff_id(number)
            assert diff_id is not None, "a layer read to its end has a diff_id"
            final = self.path(diff_id)
            hold(diff_id)
            os.sync()  # the layer's files reach the disk before its name says it is complete
            try:
                work.rename(final)
            except OSError as exc:
                if not final.is_dir():
                    raise
                log.info("layer unpacked twice diff_id=%s error=%s: keeping the first", diff_id, exc.strerror)
            fsync_path(final.parent)
            return diff_id
        finally:
            if work.exists():
                remove_or_log(work)


class LayerSession:
    """The layers one import uses: each is looked up, or unpacked, and held until the session ends."""

    def __init__(self, store: LayerStore) -> None:
        self._store = store
        self.held: list[str] = []
        self.reused = 0
        self.unpacked = 0

    def import_layers(self, archive: ImageArchive, budget: Budget) -> list[str]:
        """Every layer of ``archive`` in the store, bottom first: their diff_ids. Blocking.

        The layers left out of the upload are held first: if one is gone (removed since faas
        asked), nothing is unpacked.
        """
        for number in range(1, archive.layer_count + 1):
            diff_id = archive.diff_id(number)
            if archive.omitted(number) and not self._hold(str(diff_id)):  # the archive checked it is one
                raise Conflict(
                    f"layer {number} ({diff_id}) was left out of the upload as one faasd holds, but faasd no "
                    "longer holds it (a removal freed it meanwhile): deploy again, and faas sends it"
                )
        diff_ids = []
        for number in range(1, archive.layer_count + 1):
            diff_id = archive.diff_id(number)
            if diff_id is not None and (archive.omitted(number) or self._hold(diff_id)):
                self.reused += 1
                log.debug("layer reused diff_id=%s", diff_id)
            else:
                started = time.monotonic()
                diff_id = self._store.unpack_layer(archive, number, budget, self._hold)
                self.unpacked += 1
                log.info("layer unpacked diff_id=%s seconds=%.3f", diff_id, time.monotonic() - started)
            diff_ids.append(diff_id)
        return diff_ids

    def _hold(self, diff_id: str) -> bool:
        self.held.append(diff_id)
        return self._store._hold(diff_id)


def fsync_path(path: Path) -> None:
    """Make the file ``path``, or the entries of the directory ``path`` (a rename into it), durable."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
