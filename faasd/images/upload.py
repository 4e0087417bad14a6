"""An upload on its way to ``uploads/``: every byte as sent, but the layers the store holds.

Whoever sends the tarball (faas, an older faas, curl), a layer the layer store holds is not
written: it becomes an empty member that names its diff_id (``faasd.images.thin``), which the
import takes from the store. One that can only be known by its hash (the legacy
``<id>/layer.tar``, whose manifest comes last) is hashed as it is written and cut off again.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from faasd.daemonlog import clipped
from faasd.errors import FaasError, InsufficientStorage, RuntimeFailure, UploadCut
from faasd.images.layers import LayerStore
from faasd.images.thin import LayerStripper, Rewind

log = logging.getLogger(__name__)

# A full disk, or the state dir's owner over quota: the only failures to write that free space cures.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class UploadSummary:
    """What arrived and what was kept: bytes received and written, layers left out by the sender
    (``markers``) or here (``skipped``, with ``skipped_bytes`` of their data)."""

    received: int
    written: int
    markers: int
    skipped: int
    skipped_bytes: int


class UploadWriter:
    """Writes an upload's chunks to ``out`` as they come, leaving out what ``layers`` holds. Blocking."""

    def __init__(self, out: BinaryIO, layers: LayerStore) -> None:
        self._out = out
        self._stripper = LayerStripper(layers.holds, measure=True)
        self.received = 0

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self._apply(self._stripper.feed(chunk))

    def finish(self) -> UploadSummary:
        """Write what the stream's end leaves and flush; what the upload came to."""
        self._apply(self._stripper.close())
        self._out.flush()
        stripper = self._stripper
        return UploadSummary(
            self.received, stripper.written, stripper.markers, stripper.left_out.layers, stripper.left_out.bytes
        )

    def _apply(self, pieces: Iterable[bytes | Rewind]) -> None:
        for piece in pieces:
            if isinstance(piece, Rewind):
                self._out.truncate(piece.offset)  # flushed, then dropped, as a rule before any writeback
                self._out.seek(piece.offset)
                self._out.write(piece.data)
            else:
                self._out.write(piece)


def write_failure(exc: OSError, directory: Path) -> FaasError:
    """What a failure to write an upload under ``directory`` is: a full disk (507) only for
    ENOSPC and EDQUOT, anything else (EIO, EROFS, ...) the host's fault (500)."""
    if exc.errno in FULL_DISK:
        return InsufficientStorage(f"cannot store the upload under {directory}: {exc.strerror}")
    return RuntimeFailure(f"cannot write the upload under {directory}: {exc.strerror or exc}")


def upload_cut(function: str, received: int, exc: Exception) -> UploadCut:
    """A client that hung up mid-upload, logged: nothing of it is kept, and the disk is not to blame."""
    log.warning("upload cut function=%s bytes=%d error=%s", function, received, clipped(exc))
    return UploadCut(f"the upload ended after {received} bytes, before the end of its body: {exc}")
