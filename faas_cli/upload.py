"""What ``faas new`` sends: the image tarball, less the layers faasd already holds.

From a file (``-f``), faas reads the archive's metadata before any layer (manifest.json,
index.json and the image configs are small members, found by seeking past the layers), asks
faasd once which of the image's layers it holds, and sends the metadata first, then everything
else in order, each layer faasd holds left out (``faasd.images.thin``). Sent first, the metadata
lets faasd tell every layer that follows as it arrives.

From a pipe (``docker save IMAGE | faas new``, or ``-t``), the archive is read once: a layer is
left out when the metadata that already passed, or its name (``blobs/sha256/<hex>``, which
Docker >= 25 writes), says which it is and faasd holds it; faasd is asked as each one comes. The
legacy ``<id>/layer.tar`` comes before its manifest.json: it is held back in a temporary file
while it is hashed (an uncompressed layer's digest is its diff_id), then sent, or left out if
faasd holds it.

A layer left out is faasd's to supply: should it be freed before the import, faasd refuses the
deploy (409) and a second ``faas new`` sends it.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from faas_cli.client import UPLOAD_BLOCK_BYTES, file_blocks
from faasd.images.thin import (
    MIN_LEFT_OUT,
    LayerIndex,
    LayerStripper,
    LeftOut,
    Rewind,
    data_size,
    omitted_marker,
)


@dataclass(frozen=True)
class Upload:
    """The blocks to send, how many bytes they come to (None from a pipe), and what they leave out
    (counted as the blocks are read)."""

    blocks: Iterator[bytes]
    size: int | None
    left_out: LeftOut


class LayerLookup(Protocol):
    """Who says which layers faasd holds: the API client."""

    def held_layers(self, diff_ids: list[str]) -> set[str]: ...


class HeldLayers:
    """Which layers faasd holds, as it answers ``POST /v1/layers/lookup``; each diff_id asked once."""

    def __init__(self, client: LayerLookup) -> None:
        self._client = client
        self._answers: dict[str, bool] = {}

    def ask(self, diff_ids: Iterable[str]) -> None:
        """Ask about every diff_id not asked about yet, in one request."""
        new = sorted(set(diff_ids) - self._answers.keys())
        if new:
            held = self._client.held_layers(new)
            self._answers.update((diff_id, diff_id in held) for diff_id in new)

    def __call__(self, diff_id: str) -> bool:
        self.ask([diff_id])
        return self._answers[diff_id]


def tarball_upload(file: io.BufferedReader, client: LayerLookup) -> Upload:
    """The upload of a tarball from ``-f`` or standard input: planned ahead when it is a regular file."""
    if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        return file_upload(file, client)
    return stream_upload(file_blocks(file), client)


def stream_upload(blocks: Iterable[bytes], client: LayerLookup) -> Upload:
    """The upload of an archive read once, from a pipe or a container engine."""
    stripper = LayerStripper(HeldLayers(client), measure=True)
    return Upload(_stripped(stripper, blocks), None, stripper.left_out)


def file_upload(file: io.BufferedReader, client: LayerLookup) -> Upload:
    """The upload of the archive in ``file`` from where it stands: metadata first, held layers left out.

    A file that is no plain tar (compressed, say) is sent as it is, for faasd to read.
    """
    start = file.tell()
    end = os.fstat(file.fileno()).st_size
    index = LayerIndex()
    try:
        metadata, large = _scan(file, index)
    except tarfile.TarError:
        file.seek(start)
        return Upload(file_blocks(file), end - start, LeftOut())
    first = {info.offset for info in metadata}
    named = {
        info.offset: (info, diff_id)
        for info in large
        if info.offset not in first and (diff_id := index.diff_id(info.name)) is not None
    }
    held = HeldLayers(client)
    held.ask(diff_id for _, diff_id in named.values())
    left_out = LeftOut()
    cuts = [(info.offset, _span(info), b"") for info in metadata]  # sent first instead
    for info, diff_id in named.values():
        if held(diff_id):
            cuts.append((info.offset, _span(info), omitted_marker(info.name, diff_id)))
            left_out.layers += 1
            left_out.bytes += info.size
    size = end - start + sum(len(marker) - span for _, span, marker in cuts) + sum(_span(i) for i in metadata)
    return Upload(_spliced(file, start, metadata, sorted(cuts)), size, left_out)


def _scan(file: io.BufferedReader, index: LayerIndex) -> tuple[list[tarfile.TarInfo], list[tarfile.TarInfo]]:
    """The archive's metadata members, read into ``index``, and its members large enough to leave out.

    A small blob may be either: it is a layer if the metadata names it so.
    """
    small, large = [], []
    with tarfile.open(fileobj=file, mode="r:") as tar:  # seeks past each member's data
        for info in tar:
            if index.wants(info):
                source = tar.extractfile(info)
                assert source is not None  # wanted members are regular files
                index.add(info.name, source.read())
                small.append(info)
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and info.size >= MIN_LEFT_OUT:
                large.append(info)
    return [info for info in small if not index.names_layer(info.name)], large


def _spliced(
    file: io.BufferedReader, start: int, metadata: list[tarfile.TarInfo], cuts: list[tuple[int, int, bytes]]
) -> Iterator[bytes]:
    """The metadata members, then the file from ``start`` with each cut ``(offset, length, replacement)``
    made: the bytes of the layers left out are never read."""
    for info in metadata:
        yield from _file_range(file, info.offset, _span(info))
    position = start
    for offset, length, replacement in cuts:
        yield from _file_range(file, position, offset - position)
        if replacement:
            yield replacement
        position = offset + length
    file.seek(position)
    yield from file_blocks(file)


def _file_range(file: io.BufferedReader, offset: int, length: int) -> Iterator[bytes]:
    file.seek(offset)
    while length > 0 and (block := file.read(min(length, UPLOAD_BLOCK_BYTES))):
        length -= len(block)
        yield block


def _span(info: tarfile.TarInfo) -> int:
    """The bytes a member takes in the archive: its headers, extended ones included, and its data."""
    return info.offset_data + data_size(info) - info.offset


def _stripped(stripper: LayerStripper, blocks: Iterable[bytes]) -> Iterator[bytes]:
    """``blocks`` through ``stripper``, one block out for each that comes in (and is not left out),
    but what a member being measured brings, which waits until the stripper knows it."""
    held = _HeldBack()
    for block in blocks:
        yield from held.take(list(stripper.feed(block)), stripper.measuring)
    yield from held.take(list(stripper.close()), holding=False)


class _HeldBack:
    """The output of a stripper that measures, sent as it comes but for a member being hashed:
    that waits in a temporary file (it may be a layer of any size), so that a ``Rewind`` can
    replace it with its marker before any byte of it is sent."""

    def __init__(self) -> None:
        self._spool: IO[bytes] | None = None
        self._start = 0  # the output offset of the spool's first byte

    def take(self, pieces: list[bytes | Rewind], holding: bool) -> Iterator[bytes]:
        """What may be sent now of ``pieces``; ``holding``: a member is being measured."""
        if self._spool is None and not holding and not any(isinstance(p, Rewind) for p in pieces):
            if out := b"".join(p for p in pieces if isinstance(p, bytes)):
                self._start += len(out)
                yield out
            return
        if self._spool is None:
            self._spool = tempfile.TemporaryFile()
        for piece in pieces:
            if isinstance(piece, Rewind):
                self._spool.truncate(piece.offset - self._start)
                self._spool.seek(0, os.SEEK_END)
                piece = piece.data
            self._spool.write(piece)
        if not holding:
            yield from self._release()

    def _release(self) -> Iterator[bytes]:
        assert self._spool is not None
        spool, self._spool = self._spool, None
        with spool:
            self._start += spool.tell()
            spool.seek(0)
            while block := spool.read(UPLOAD_BLOCK_BYTES):
                yield block
