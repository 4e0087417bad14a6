"""Pull an image from a registry into an OCI-layout tarball, which is then imported as an upload is.

A pull is a second way for an image's bytes to reach ``uploads/``, and the only one that
differs: the import (``faasd.images.store``) reads the result with the same ``ImageArchive``,
so every digest, limit and hostile-content check of an uploaded archive covers a pulled one too.

``Pull.resolve`` asks for the manifest (an index or manifest list is followed to this host's
platform, as ``archive.pick_platform`` chooses) and the image config, whose ``diff_ids`` tell
the layers the layer store already holds: those are never fetched, and stand in the tarball as
the empty members a thin upload leaves (``faasd.images.thin``). ``Pull.fetch`` lays the tarball
out at once, since the manifest states every blob's size, and fetches the other layers
concurrently into their places in it. Each blob is hashed as its bytes arrive and refused when
its size or digest differs from the manifest's: a blob cut short or one byte long stops there.

The tarball is removed when the fetch fails or is cancelled; the caller removes it after the
import, as it does an upload. Like an upload it is never synced: a crash leaves nothing to keep
(``uploads/`` is emptied at start-up), and the layers are synced as they are unpacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from faasd.errors import ImageTooLarge, InvalidImage, RegistryUnavailable
from faasd.images.archive import (
    DIGEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    ImageConfig,
    blob_member,
    parse_json,
    pick_platform,
)
from faasd.images.distribution import DistributionClient, Manifest
from faasd.images.reference import Reference
from faasd.images.thin import ENCODING, ERRORS, omitted_marker, padded

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SCHEMA1_TYPES = {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}
MAX_INDEX_DEPTH = 4
MAX_LAYERS = 1000
# go-containerregistry and containerd fetch three or four blobs at once.
CONCURRENT_LAYERS = 4
FETCH_CHUNK = 1 << 20
PROGRESS_SECONDS = 0.2
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE

Report = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Layer:
    """One layer as the manifest states it, and whether the layer store holds it already."""

    digest: str
    size: int
    diff_id: str | None
    held: bool

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "held": self.held}


@contextlib.asynccontextmanager
async def registry_session(timeout_seconds: float) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for one pull: the system's CAs, and a bound on connecting and on each read
    (a slow registry times out; a large blob arriving steadily does not)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False, auto_decompress=False) as session:
        yield session


async def no_report(_event: dict[str, Any]) -> None:
    """For a pull nobody watches."""


class Pull:
    """One image from one registry: resolved first, then fetched into a tarball."""

    manifest: Manifest  # the image manifest, the platform chosen
    resolved_digest: str  # what the reference resolved to: the digest docker pull prints
    config: bytes
    config_digest: str
    layers: tuple[Layer, ...]

    def __init__(self, client: DistributionClient, reference: Reference, held: Callable[[str], bool]) -> None:
        self.reference = reference
        self._client = client
        self._held = held

    @property
    def image_config(self) -> ImageConfig:
        return ImageConfig.from_image_config(parse_json(self.config, "the image config"))

    @property
    def missing_bytes(self) -> int:
        """The bytes of the layers still to fetch (each blob once)."""
        return sum({layer.digest: layer.size for layer in self.layers if not layer.held}.values())

    async def resolve(self) -> None:
        """Fetch the manifest (through indexes, to this platform) and the config; plan the layers."""
        manifest = await self._client.manifest(self.reference.selector)
        self.resolved_digest = manifest.digest
        for _ in range(MAX_INDEX_DEPTH):
            document, media_type = _document(manifest)
            if media_type in MANIFEST_TYPES:
                break
            descriptor = pick_platform(document.get("manifests"))
            manifest = await self._client.manifest(_digest_of(descriptor, "the index's entry"))
        else:
            raise InvalidImage(f"{self.reference}: indexes nest more than {MAX_INDEX_DEPTH} deep")
        self.manifest = Manifest(manifest.data, media_type, manifest.digest)
        config = document.get("config")
        layers = document.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
            raise InvalidImage(f"{self.reference}: the manifest lacks config or layers")
        if len(layers) > MAX_LAYERS:
            raise InvalidImage(f"{self.reference}: the manifest lists {len(layers)} layers (at most {MAX_LAYERS})")
        self.config_digest = _digest_of(config, "the config")
        self.config = await self._client.small_blob(self.config_digest, _size_of(config, "the config"))
        diff_ids = _diff_ids(parse_json(self.config, "the image config"), len(layers))
        self.layers = tuple(
            Layer(
                _digest_of(d, f"layer {n}"),
                _size_of(d, f"layer {n}"),
                diff_id,
                diff_id is not None and self._held(diff_id),
            )
            for n, (d, diff_id) in enumerate(zip(layers, diff_ids, strict=True), start=1)
        )

    async def fetch(self, directory: Path, max_bytes: int, report: Report = no_report) -> Path:
        """The image as an OCI-layout tarball in ``directory``, the layers held left out."""
        if self.missing_bytes > max_bytes:
            raise ImageTooLarge(
                f"{self.reference}: its layers come to {self.missing_bytes} bytes, over the {max_bytes} byte "
                "limit on an upload"
            )
        members, regions = self._layout()
        fd, name = tempfile.mkstemp(dir=directory, suffix=".tar")
        path = Path(name)
        try:
            await asyncio.to_thread(_write_layout, fd, members)
            async with asyncio.TaskGroup() as tasks:
                limit = asyncio.Semaphore(CONCURRENT_LAYERS)
                for layer, offset in regions:
                    tasks.create_task(self._fetch_layer(fd, layer, offset, limit, report))
        except BaseException as exc:
            path.unlink(missing_ok=True)
            if isinstance(exc, BaseExceptionGroup):
                raise _first(exc) from None
            raise
        finally:
            os.close(fd)
        return path

    def _layout(self) -> tuple[list[tuple[int, bytes]], list[tuple[Layer, int]]]:
        """What the tarball holds where: (offset, bytes) written at once, (layer, offset) to fetch.

        Members: ``oci-layout``, ``index.json`` naming the manifest, the manifest and config blobs
        as the registry sent them, then each layer blob once (or its marker, if held).
        """
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": self.manifest.media_type, "digest": self.manifest.digest, "size": len(self.manifest.data)}
            ],
        }
        small = [
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            (blob_member(self.manifest.digest), self.manifest.data),
            (blob_member(self.config_digest), self.config),
        ]
        members: list[tuple[int, bytes]] = []
        regions: list[tuple[Layer, int]] = []
        offset = 0
        for name, data in small:
            header = _header(name, len(data))
            members.append((offset, header + data))
            offset += len(header) + padded(len(data))
        seen: set[str] = set()
        for layer in self.layers:
            if layer.digest in seen or layer.digest == self.config_digest:
                continue
            seen.add(layer.digest)
            if layer.held:
                marker = omitted_marker(blob_member(layer.digest), str(layer.diff_id))
                members.append((offset, marker))
                offset += len(marker)
                continue
            header = _header(blob_member(layer.digest), layer.size)
            members.append((offset, header))
            regions.append((layer, offset + len(header)))
            offset += len(header) + padded(layer.size)
        members.append((offset, bytes(END_OF_ARCHIVE)))
        return members, regions

    async def _fetch_layer(self, fd: int, layer: Layer, offset: int, limit: asyncio.Semaphore, report: Report) -> None:
        """Stream one blob into its region of the tarball, hashing it; refuse any other size or digest."""
        async with limit:
            digest = hashlib.sha256()
            received = 0
            last = time.monotonic()
            await report({"event": "layer", "digest": layer.digest, "size": layer.size, "done": 0})
            async with self._client.blob(layer.digest) as response:
                try:
                    async for chunk in response.content.iter_chunked(FETCH_CHUNK):
                        if received + len(chunk) > layer.size:
                            raise InvalidImage(
                                f"layer {layer.digest}: the registry sent more than the {layer.size} bytes "
                                "the manifest states"
                            )
                        await asyncio.to_thread(_write_hashed, fd, chunk, offset + received, digest)
                        received += len(chunk)
                        if time.monotonic() - last >= PROGRESS_SECONDS:
                            last = time.monotonic()
                            await report(
                                {"event": "layer", "digest": layer.digest, "size": layer.size, "done": received}
                            )
                except aiohttp.ClientPayloadError as exc:
                    raise RegistryUnavailable(
                        f"layer {layer.digest}: the registry's answer broke off after {received} of {layer.size} "
                        f"bytes (a truncated blob): {exc}"
                    ) from exc
            if received < layer.size:
                raise InvalidImage(
                    f"layer {layer.digest}: the blob ended after {received} of the {layer.size} bytes "
                    "the manifest states (truncated)"
                )
            actual = f"sha256:{digest.hexdigest()}"
            if actual != layer.digest:
                raise InvalidImage(f"layer {layer.digest}: digest mismatch: the registry's bytes hash to {actual}")
            await report({"event": "layer", "digest": layer.digest, "size": layer.size, "done": received})


def _document(manifest: Manifest) -> tuple[dict[str, Any], str]:
    """The manifest's JSON and its media type: the one the document states, else the header's."""
    document = parse_json(manifest.data, f"manifest {manifest.digest}")
    if not isinstance(document, dict):
        raise InvalidImage(f"manifest {manifest.digest} is not a JSON object")
    media_type = document.get("mediaType") or manifest.media_type
    if media_type not in MANIFEST_TYPES | INDEX_TYPES:
        # An OCI manifest may leave mediaType out, and a registry may serve it as application/json.
        if "manifests" in document:
            media_type = OCI_INDEX
        elif "layers" in document:
            media_type = OCI_MANIFEST
        elif media_type in SCHEMA1_TYPES or document.get("schemaVersion") == 1:
            raise InvalidImage(
                f"manifest {manifest.digest} is Docker schema 1, which registries deprecated: push the image again"
            )
        else:
            raise InvalidImage(f"manifest {manifest.digest} has the unsupported media type {media_type!r}")
    return document, str(media_type)


def _digest_of(descriptor: dict[str, Any], what: str) -> str:
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise InvalidImage(f"{what}: unsupported or malformed digest {digest!r} (sha256 expected)")
    return digest


def _size_of(descriptor: dict[str, Any], what: str) -> int:
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidImage(f"{what}: the manifest gives no size, or a negative one")
    return size


def _diff_ids(config: Any, count: int) -> list[str | None]:
    """Each layer's diff_id from the config, when it lists one per layer; the import checks them."""
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if isinstance(diff_ids, list) and len(diff_ids) == count:
        return [d if isinstance(d, str) and DIGEST.fullmatch(d) else None for d in diff_ids]
    return [None] * count


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT, ENCODING, ERRORS)


def _write_layout(fd: int, members: list[tuple[int, bytes]]) -> None:
    """The tarball's full size (the layer data to come stays a hole) and every byte known now."""
    end_offset, end = members[-1]
    os.ftruncate(fd, end_offset + len(end))
    for offset, data in members:
        os.pwrite(fd, data, offset)


def _write_hashed(fd: int, chunk: bytes, offset: int, digest: Any) -> None:
    digest.update(chunk)
    os.pwrite(fd, chunk, offset)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error that ended a task group: the first not a cancellation of the others."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
