"""Thin uploads: an image tarball with the layers faasd already holds left out.

The layer store keeps each layer once, by diff_id (``faasd.images.layers``), so a second image
on a known base need not carry the base's bytes. Both ends cut them out of the tar stream as it
passes, the same way (``LayerStripper``):

- ``faas new`` leaves out the layers the daemon says it holds (``POST /v1/layers/lookup``);
- the daemon, whoever sent the upload (an older faas, curl), does not write the layers it holds.

A layer left out stays in the archive as an empty member of the same name whose PAX record
``FAASD.omitted-layer`` (a vendor keyword, as POSIX pax allows) states its diff_id; every other
byte passes unchanged. The import (``faasd.images.archive``) takes such a member for the stored
layer once the image config names that very diff_id, so a wrong guess here can only make the
import refuse, never change what runs.

Which member holds which layer is read from the archive's own metadata (``LayerIndex``), as far
as it has passed by: manifest.json and the image configs it names, or index.json and the
manifests and configs under blobs/. A member named ``blobs/sha256/<hex>`` with no such entry yet
is taken for the layer ``sha256:<hex>``: an uncompressed layer's blob digest is its diff_id
(Docker >= 25 and podman write layers so). The legacy ``<id>/layer.tar`` comes before its
manifest.json, so a stream read once cannot tell it: faas, reading a file, sends the metadata
first; read from a pipe, faas holds such a member back (in a temporary file) while it hashes it,
and the daemon hashes it as it writes it: either takes it back if it is a layer faasd holds
(``measure``).

The walk is bounded like the import: extended headers over ``MAX_EXTENDED_HEADER`` and anything
the walker does not follow (global or sparse headers, a damaged block) end it, and the rest
passes verbatim, for the import to judge.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from faasd.images.archive import (
    DIGEST,
    MAX_DOCUMENT,
    MAX_EXTENDED_HEADER,
    OMITTED_LAYER,
    blob_member,
    clean_name,
    digest_from_name,
)

BLOCK = tarfile.BLOCKSIZE
ENCODING, ERRORS = "utf-8", "surrogateescape"  # what tarfile uses to read names on Linux
EXTENDED_TYPES = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# A marker costs three blocks, and a question to the daemon: smaller members are not worth leaving out.
MIN_LEFT_OUT = 64 << 10
# Metadata members are kept in memory until the layers they describe pass: this much at most
# (each no larger than the import reads: MAX_DOCUMENT).
MAX_METADATA = 8 << 20
MAX_INDEX_DEPTH = 4


def omitted_marker(name: str, diff_id: str) -> bytes:
    """The header blocks that stand for member ``name``, a layer left out: empty, with its diff_id."""
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.pax_headers = {OMITTED_LAYER: diff_id}
    return info.tobuf(tarfile.PAX_FORMAT, ENCODING, ERRORS)


def padded(size: int) -> int:
    """``size`` rounded up to whole tar blocks."""
    return -(-size // BLOCK) * BLOCK


def data_size(info: tarfile.TarInfo) -> int:
    """The bytes that follow a member's header, padding included, as tarfile counts them."""
    return padded(info.size) if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES else 0


@dataclass(frozen=True)
class Member:
    """A member's header blocks (extended ones included), where they start, and what they say."""

    offset: int
    header: bytes
    info: tarfile.TarInfo


@dataclass(frozen=True)
class Data:
    """A piece of the current member's data (padding included); ``last`` ends the member."""

    data: bytes
    last: bool


@dataclass(frozen=True)
class Verbatim:
    """Bytes past what the walker follows: the end-of-archive blocks and whatever comes after."""

    data: bytes


Event = Member | Data | Verbatim


class TarWalker:
    """A push parser of a tar stream that hands back every byte it was fed, in order, as events."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0  # of the buffer's first byte in the stream
        self._headers = bytearray()  # the current member's extended headers so far
        self._left = -1  # data bytes of the current member still to come; -1 between members
        self._verbatim = False

    def feed(self, data: bytes) -> Iterator[Event]:
        while data and not self._buffer and self._left > 0:  # within a member's data: passed on, not copied
            piece, data = (data, b"") if len(data) <= self._left else (data[: self._left], data[self._left :])
            self._offset += len(piece)
            self._left -= len(piece)
            yield Data(piece, last=self._left == 0)
            if self._left == 0:
                self._left = -1
        if self._verbatim and not self._buffer:
            self._offset += len(data)
            if data:
                yield Verbatim(data)
            return
        self._buffer += data
        while self._buffer or self._left == 0:
            if self._verbatim:
                yield Verbatim(self._take(len(self._buffer)))
            elif self._left >= 0:
                piece = self._take(min(self._left, len(self._buffer)))
                self._left -= len(piece)
                yield Data(piece, last=self._left == 0)
                if self._left == 0:
                    self._left = -1
            elif (event := self._next_header()) is not None:
                yield event
            elif not self._verbatim:
                return  # the next header is not all here yet

    def close(self) -> Iterator[Event]:
        """What is left of a stream that ended mid-member: verbatim, for the import to refuse."""
        rest = bytes(self._headers) + self._take(len(self._buffer))
        self._headers.clear()
        if rest:
            yield Verbatim(rest)

    def _next_header(self) -> Member | None:
        """The next member once all its headers are buffered; None to wait for more, or on going verbatim."""
        while len(self._buffer) >= BLOCK:
            block = bytes(self._buffer[:BLOCK])
            if block == bytes(BLOCK):
                self._give_up()  # the end-of-archive blocks, and any padding after them
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, ENCODING, ERRORS)
            except tarfile.HeaderError:
                self._give_up()
                return None
            if info.type not in EXTENDED_TYPES:
                return self._member_header()
            if not 0 <= info.size <= MAX_EXTENDED_HEADER:
                self._give_up()
                return None
            size = BLOCK + padded(info.size)
            if len(self._buffer) < size:
                return None
            self._headers += self._take(size)
        return None

    def _member_header(self) -> Member | None:
        """The member whose own header block is next, read with the extended headers before it."""
        offset = self._offset - len(self._headers)
        header = bytes(self._headers) + bytes(self._buffer[:BLOCK])
        info = _parse_headers(header)
        if info is None:
            self._give_up()
            return None
        self._take(BLOCK)
        self._headers.clear()
        self._left = data_size(info)
        return Member(offset, header, info)

    def _give_up(self) -> None:
        """From here on every byte passes as it is, the pending headers first."""
        self._buffer[:0] = self._headers
        self._offset -= len(self._headers)
        self._headers.clear()
        self._verbatim = True

    def _take(self, size: int) -> bytes:
        with memoryview(self._buffer) as view:
            taken = bytes(view[:size])
        del self._buffer[:size]
        self._offset += size
        return taken


def _parse_headers(header: bytes) -> tarfile.TarInfo | None:
    """The member that ``header`` (its extended headers and its own block) describes, as tarfile
    reads it; None for what the walker does not follow (sparse files, global headers)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(header), mode="r:", encoding=ENCODING, errors=ERRORS) as tar:
            info = tar.next()  # the member open() read: the header holds no other
    except (tarfile.TarError, UnicodeError, ValueError):
        return None
    if info is None or info.size < 0 or info.type in (tarfile.GNUTYPE_SPARSE, tarfile.XGLTYPE):
        return None
    if any(key.startswith("GNU.sparse") for key in info.pax_headers):
        return None
    return info


class LayerIndex:
    """Which member holds which layer, from the archive's metadata seen so far; a hint only."""

    def __init__(self) -> None:
        self._documents: dict[str, bytes] = {}
        self._size = 0
        self._layers: dict[str, str | None] | None = None  # member -> diff_id; None where unclear

    def wants(self, info: tarfile.TarInfo) -> bool:
        """Whether ``info`` may be metadata worth keeping: a small .json file or blob."""
        name = clean_name(info.name)
        small = info.size <= MAX_DOCUMENT and self._size + info.size <= MAX_METADATA
        return info.isreg() and small and (name.endswith(".json") or name.startswith("blobs/"))

    def add(self, name: str, data: bytes) -> None:
        self._documents[clean_name(name)] = data
        self._size += len(data)
        self._layers = None

    def diff_id(self, name: str) -> str | None:
        """The diff_id of the layer member ``name`` holds, if the metadata or its name tells."""
        name = clean_name(name)
        layers = self._mapping()
        return layers[name] if name in layers else digest_from_name(name)

    def names_layer(self, name: str) -> bool:
        """Whether the metadata seen so far names member ``name`` as a layer."""
        return clean_name(name) in self._mapping()

    def _mapping(self) -> dict[str, str | None]:
        if self._layers is None:
            self._layers = {}
            for member, diff_id in [*self._legacy_layers(), *self._oci_layers()]:
                agreed = self._layers.get(member, diff_id) == diff_id
                self._layers[member] = diff_id if agreed else None  # two images disagree: leave it in
        return self._layers

    def _legacy_layers(self) -> Iterator[tuple[str, str]]:
        """manifest.json's images: their Layers, paired with their configs' diff_ids."""
        manifest = self._json("manifest.json")
        for entry in manifest if isinstance(manifest, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("Config"), str):
                yield from _pairs(entry.get("Layers"), self._json(clean_name(entry["Config"])))

    def _oci_layers(self) -> Iterator[tuple[str, str]]:
        """index.json's manifests, nested indexes followed: their layer blobs, paired likewise."""
        todo = [(self._json("index.json"), 0)]
        while todo:
            document, depth = todo.pop()
            if not isinstance(document, dict) or depth > MAX_INDEX_DEPTH:
                continue
            for descriptor in _dicts(document.get("manifests")):
                todo.append((self._json(_blob_name(descriptor)), depth + 1))
            config = document.get("config")
            if isinstance(config, dict):
                members = [_blob_name(layer) for layer in _dicts(document.get("layers"))]
                yield from _pairs(members, self._json(_blob_name(config)))

    def _json(self, name: str | None) -> Any:
        data = self._documents.get(name) if name is not None else None
        try:
            return json.loads(data) if data is not None else None
        except (ValueError, UnicodeDecodeError):
            return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _blob_name(descriptor: dict[str, Any]) -> str | None:
    digest = descriptor.get("digest")
    return blob_member(digest) if isinstance(digest, str) and DIGEST.fullmatch(digest) else None


def _pairs(members: Any, config: Any) -> Iterator[tuple[str, str]]:
    """Layer members and the config's diff_ids, one for one, when both are well formed."""
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(members, list) or not isinstance(diff_ids, list) or len(members) != len(diff_ids):
        return
    for member, diff_id in zip(members, diff_ids, strict=True):
        if isinstance(member, str) and isinstance(diff_id, str) and DIGEST.fullmatch(diff_id):
            yield clean_name(member), diff_id


@dataclass
class LeftOut:
    """What a stripper left out so far: layers, and the bytes of their data."""

    layers: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Rewind:
    """Cut what was written back to ``offset`` bytes, then write ``data`` (the daemon's file only)."""

    offset: int
    data: bytes


class LayerStripper:
    """Passes a tar stream through, leaving out the data of the layers ``held(diff_id)`` says
    faasd holds, and whole the members at ``skip`` (stream offsets: sent already).

    ``index`` may come filled from a read of the whole file. With ``measure``, a large member
    whose layer is not known yet is hashed as it passes; if faasd holds it after all, a ``Rewind``
    takes it back: only the daemon, which writes to a file, can act on that.
    """

    def __init__(
        self,
        held: Callable[[str], bool],
        index: LayerIndex | None = None,
        skip: Collection[int] = (),
        measure: bool = False,
    ) -> None:
        self._held = held
        self.index = index or LayerIndex()
        self._skip = skip
        self._measure = measure
        self._walker = TarWalker()
        self.left_out = LeftOut()
        self.markers = 0  # members that arrived left out already
        self.written = 0
        self._member: Member | None = None
        self._dropping = False
        self._metadata: bytearray | None = None
        self._hash: Any = None  # hashlib's sha256, for a member being measured
        self._seen = 0  # data bytes of the current member so far, padding excluded
        self._start = 0  # where the current member starts in the output

    @property
    def measuring(self) -> bool:
        """Whether a member is being hashed: what was given out since it began may be rewound."""
        return self._hash is not None

    def feed(self, data: bytes) -> Iterator[bytes | Rewind]:
        for event in self._walker.feed(data):
            yield from self._handle(event)

    def close(self) -> Iterator[bytes | Rewind]:
        for event in self._walker.close():
            yield from self._handle(event)

    def _handle(self, event: Event) -> Iterator[bytes | Rewind]:
        if isinstance(event, Member):
            yield from self._begin(event)
        elif isinstance(event, Data):
            yield from self._data(event)
        else:
            yield self._out(event.data)

    def _begin(self, member: Member) -> Iterator[bytes]:
        info = member.info
        self._member, self._start, self._seen = member, self.written, 0
        self._metadata = bytearray() if self.index.wants(info) else None
        self._hash = None
        self._dropping = member.offset in self._skip
        if self._dropping:
            self._metadata = None  # read with the whole file already
            return
        if OMITTED_LAYER in info.pax_headers:
            self.markers += 1
        elif info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and info.size >= MIN_LEFT_OUT:
            diff_id = self.index.diff_id(info.name)
            if diff_id is not None and self._held(diff_id):
                self._dropping, self._metadata = True, None
                self._count_left_out(info)
                yield self._out(omitted_marker(info.name, diff_id))
                return
            if diff_id is None and self._measure:
                self._hash = hashlib.sha256()
        yield self._out(member.header)

    def _data(self, event: Data) -> Iterator[bytes | Rewind]:
        assert self._member is not None
        info = self._member.info
        if self._metadata is not None or self._hash is not None:
            content = memoryview(event.data)[: max(0, info.size - self._seen)]  # the padding is no content
            if self._metadata is not None:
                self._metadata += content
            if self._hash is not None:
                self._hash.update(content)
        self._seen += len(event.data)
        if not self._dropping:
            yield self._out(event.data)
        if not event.last:
            return
        if self._metadata is not None:
            self.index.add(info.name, bytes(self._metadata))
        measured, self._hash = self._hash, None
        if measured is not None and self._held(diff_id := f"sha256:{measured.hexdigest()}"):
            self._count_left_out(info)
            self.written = self._start
            yield Rewind(self._start, self._out(omitted_marker(info.name, diff_id)))

    def _count_left_out(self, info: tarfile.TarInfo) -> None:
        self.left_out.layers += 1
        self.left_out.bytes += info.size

    def _out(self, data: bytes) -> bytes:
        self.written += len(data)
        return data
