"""Read an image tarball on disk: the legacy ``docker save`` layout or an OCI image layout.

Layouts understood (the first that applies wins):

- ``manifest.json`` (docker save; podman's docker-archive, whose layer members may be links to
  other members; Docker >= 25, which also writes an OCI layout and points manifest.json at it);
- ``index.json`` + ``blobs/sha256/<hex>`` (image-spec image-layout.md: podman's oci-archive,
  buildx and containerd exports), following nested indexes to this machine's platform.

Names from manifests and indexes are only ever looked up as member names inside the tarball,
never joined to a filesystem path. Every digest the archive states is checked: OCI blobs
(the layers while they stream by) and each layer's uncompressed diff_id from the image config,
so a tampered archive fails before its rootfs is registered. Only what a layer's bytes say
decides its compression, never its name or media type.

Everything an archive could make the daemon do is bounded: a compressed archive is decompressed
once, to at most ``max_bytes``, into an unnamed temporary file beside it; the archive holds at
most ``MAX_MEMBERS`` members, each name at most once; the layers together uncompress to at most
``max_bytes`` (a gzip bomb stops there); no tar header may carry more than
``MAX_EXTENDED_HEADER`` bytes of PAX records or GNU long names, which tarfile would read whole;
no manifest, index or config, read whole too, more than ``MAX_DOCUMENT``; and the image's
command line and environment no more than execve would take (``ImageConfig.check``).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import itertools
import json
import lzma
import platform
import posixpath
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from faasd.errors import FaasError, ImageTooLarge, InvalidImage, InvalidRequest

# image-spec media-types.md, and the Docker equivalents that docker save and registries still use.
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
# image-spec annotations.md names the tag; containerd (and Docker >= 25) add the full reference.
REF_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What "docker save IMAGE | gzip" and friends produce; tarfile's "r:*" knows the same three.
ARCHIVE_COMPRESSIONS: dict[bytes, Callable[[IO[bytes]], io.BufferedIOBase]] = {
    GZIP_MAGIC: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    b"BZh": lambda raw: bz2.BZ2File(raw, mode="rb"),
    b"\xfd7zXZ\x00": lambda raw: lzma.LZMAFile(raw, mode="rb"),
}
READ_CHUNK = 1 << 20
ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}  # uname -m -> GOARCH
MAX_INDEX_DEPTH = 4
MAX_LINK_HOPS = 8
# A docker save of a hundred images of a hundred layers is about 40 000 members.
MAX_MEMBERS = 100_000
# PAX records of two PATH_MAX names and a few xattrs fit many times over.
MAX_EXTENDED_HEADER = 1 << 20
# Manifests, indexes and image configs are read whole, and parsed: real ones are a few KiB, and
# the manifest.json of a docker save of a hundred images of a hundred layers is under 1 MiB.
MAX_DOCUMENT = 1 << 20
# What the kernel's execve takes (linux/binfmts.h MAX_ARG_STRLEN: 32 pages, the NUL included),
# and a bound on argv and envp together, strings and pointers, well under the 2 MiB an 8 MiB
# stack allows: a config past either can never start.
MAX_ARG_STRLEN = 32 * 4096
MAX_EXEC_BYTES = 1 << 20
POINTER_BYTES = 8
PATH_MAX = 4096  # linux/limits.h, the NUL included
EXTENDED_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)

# distribution/reference's grammar (docker's "name[:tag]") and image-spec annotations.md's for
# org.opencontainers.image.ref.name; a --tag may be either. Digests never name an archived image.
_DOCKER_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOCKER_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOCKER_DOMAIN = rf"{_DOCKER_LABEL}(?:\.{_DOCKER_LABEL})*(?::[0-9]+)?"
DOCKER_REFERENCE = re.compile(
    rf"(?:{_DOCKER_DOMAIN}/)?{_DOCKER_COMPONENT}(?:/{_DOCKER_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
)
_OCI_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
OCI_REF_NAME = re.compile(rf"{_OCI_COMPONENT}(?:/{_OCI_COMPONENT})*")
MAX_REFERENCE = 255 + 1 + 128  # a name of at most 255 characters, ":", a tag of at most 128
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The PAX record of a member that stands for a layer left out of the upload (see faasd.images.thin).
OMITTED_LAYER = "FAASD.omitted-layer"


@dataclass(frozen=True)
class ImageConfig:
    """What the image asks to run: the parts of the image config a container needs."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]  # "KEY=value"
    working_dir: str  # "" when unset
    user: str  # "" when unset

    @classmethod
    def from_image_config(cls, document: dict[str, Any]) -> ImageConfig:
        """Take the ``config`` object of an image config (image-spec config.md); null is empty.

        A config that could never start a process is refused here, at deploy, rather than by
        runc at the first request: NUL bytes (no C string holds one), an Env entry that is not
        NAME=VALUE, a WorkingDir that is relative or climbs, a command line or environment the
        kernel's execve would refuse as too long.
        """
        config = document.get("config") or {}
        if not isinstance(config, dict):
            raise InvalidImage("the image config's 'config' is not an object")
        image = cls(
            entrypoint=_strings(config, "Entrypoint"),
            cmd=_strings(config, "Cmd"),
            env=_strings(config, "Env"),
            working_dir=_string(config, "WorkingDir"),
            user=_string(config, "User"),
        )
        image.check()
        return image

    def check(self) -> None:
        """Refuse what no container could start with (see ``from_image_config``)."""
        lists = {"Entrypoint": self.entrypoint, "Cmd": self.cmd, "Env": self.env}
        strings = [*((key, item) for key, items in lists.items() for item in items)]
        strings += [("WorkingDir", self.working_dir), ("User", self.user)]
        sizes = {}
        for key, value in strings:
            if "\0" in value:
                raise InvalidImage(f"the image config's {key} holds a NUL byte, which no program can be given")
            try:
                size = sizes[value] = len(value.encode())
            except UnicodeEncodeError:
                raise InvalidImage(f"the image config's {key} holds a lone surrogate, which is no UTF-8") from None
            if size >= MAX_ARG_STRLEN:
                raise ImageTooLarge(
                    f"the image config's {key} holds a string of {size} bytes: the kernel gives no program "
                    f"one of {MAX_ARG_STRLEN} or more (MAX_ARG_STRLEN)"
                )
        exec_bytes = sum(sizes[item] + 1 + POINTER_BYTES for items in lists.values() for item in items)
        if exec_bytes > MAX_EXEC_BYTES:
            raise ImageTooLarge(
                f"the image's command line and environment (Entrypoint, Cmd, Env) take {exec_bytes} bytes: "
                f"at most {MAX_EXEC_BYTES} are accepted"
            )
        for item in self.env:
            name, equals, _ = item.partition("=")
            if not (name and equals):
                raise InvalidImage(f"the image config's Env entry {_shorten(item)!r} is not NAME=VALUE")
        check_working_dir(self.working_dir)

    def to_json(self) -> str:
        """The form stored in the registry."""
        return json.dumps(
            {
                "entrypoint": self.entrypoint,
                "cmd": self.cmd,
                "env": self.env,
                "working_dir": self.working_dir,
                "user": self.user,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ImageConfig:
        data = json.loads(text)
        return cls(
            entrypoint=tuple(data["entrypoint"]),
            cmd=tuple(data["cmd"]),
            env=tuple(data["env"]),
            working_dir=data["working_dir"],
            user=data["user"],
        )


def check_working_dir(path: str) -> None:
    """An image's WorkingDir, if set, is absolute and never climbs (``..``); that it is a directory
    of the image is checked once its rootfs is mounted (``faasd.images.store``)."""
    if not path:
        return
    if not path.startswith("/"):
        raise InvalidImage(f"the image config's WorkingDir {_shorten(path)!r} is not an absolute path")
    if ".." in path.split("/"):
        raise InvalidImage(f"the image config's WorkingDir {_shorten(path)!r} climbs with '..'")
    if len(path.encode()) >= PATH_MAX:
        raise InvalidImage(f"the image config's WorkingDir is longer than PATH_MAX ({PATH_MAX} bytes)")


def _shorten(text: str) -> str:
    return text if len(text) <= 64 else text[:64] + "..."


def _strings(config: dict[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidImage(f"the image config's {key} is not a list of strings")
    return tuple(value)


def _string(config: dict[str, Any], key: str) -> str:
    value = config.get(key) or ""
    if not isinstance(value, str):
        raise InvalidImage(f"the image config's {key} is not a string")
    return value


@dataclass(frozen=True)
class _Layer:
    """Where a layer is in the tarball and what it must hash to."""

    member: str
    blob_digest: str | None  # the digest of the blob as stored (OCI, and Docker >= 25 names)
    diff_id: str | None  # the digest of the uncompressed tar, from the image config
    omitted: bool = False  # left out of the upload as a layer faasd holds


DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def _is_io_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk's doing (it has an errno), not corrupt compressed data."""
    return isinstance(exc, OSError) and exc.errno is not None


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses an oversized extended header before tarfile reads it whole.

    tarfile reads PAX records and GNU long names into memory at whatever size their header
    states; this is the one hook it offers ahead of that read.
    """

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in EXTENDED_HEADER_TYPES and self.size > MAX_EXTENDED_HEADER:
            raise InvalidImage(
                f"a tar header carries {self.size} bytes of PAX records or GNU long names "
                f"(at most {MAX_EXTENDED_HEADER} are read)"
            )
        return super()._proc_member(archive)  # type: ignore[misc]  # private, but stable since 3.0


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Allowance:
    """How many more bytes ``what`` may produce once uncompressed; shared by all that reads it."""

    def __init__(self, what: str, max_bytes: int) -> None:
        self._what = what
        self._max_bytes = max_bytes
        self._left = max_bytes

    def take(self, size: int) -> None:
        self._left -= size
        if self._left < 0:
            raise ImageTooLarge(
                f"{self._what} uncompress to more than {self._max_bytes} bytes, "
                "this daemon's limit (faasd --max-image-size)"
            )


class _HashingReader:
    """A read-only stream that hashes what passes through it, within an optional allowance.

    Decompression errors surface here, while a consumer reads the layer, so they are turned
    into ``InvalidImage`` here too; real I/O errors (with an errno) pass through untouched.
    """

    def __init__(self, stream: _Readable, allowance: _Allowance | None = None) -> None:
        self._stream = stream
        self._allowance = allowance
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except DECOMPRESSION_ERRORS as exc:
            if _is_io_error(exc):
                raise
            raise InvalidImage(f"the layer's compressed data is corrupt: {exc}") from exc
        if self._allowance is not None:
            self._allowance.take(len(data))
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass


class ImageArchive:
    """Context manager over a docker-save or OCI-layout tar file on disk.

    ``config`` and ``digest`` (the image ID: the sha256 of the config blob) are set on entry,
    once the manifest, config and every layer member were found. ``open_layer(n)`` then streams
    one layer (``layers()`` all of them, in order), its digests checked once it is read to its end.
    """

    config: ImageConfig
    digest: str

    def __init__(self, path: Path, tag: str | None, max_bytes: int) -> None:
        if tag is not None:
            check_reference(tag)
        self._path = path
        self._tag = tag
        self._max_bytes = max_bytes
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        self._layers: list[_Layer] = []
        self._measured: dict[int, str] = {}  # layer number -> diff_id, for layers the config has none for
        self._uncompressed = _Allowance("the image's layers", max_bytes)

    def __enter__(self) -> ImageArchive:
        try:
            self._file = self._plain_archive()
            try:
                self._tar = tarfile.open(fileobj=self._file, mode="r:", tarinfo=_BoundedTarInfo)
            except tarfile.TarError as exc:
                raise InvalidImage(f"the upload is not a tar archive (docker save output expected): {exc}") from exc
            self._index_members()
            if "manifest.json" in self._members:
                self._read_legacy()
            elif "index.json" in self._members:
                self._read_oci()
            else:
                raise InvalidImage("the archive has neither manifest.json (docker save) nor index.json (OCI layout)")
        except tarfile.TarError as exc:
            self.__exit__()
            raise InvalidImage(f"the archive is damaged: {exc}") from exc
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _plain_archive(self) -> IO[bytes]:
        """The archive as a seekable, uncompressed file.

        A compressed archive (docker save | gzip) is decompressed once, within ``max_bytes``,
        into an unnamed file beside the upload: the kernel removes it on close, or on a crash.
        tarfile could read it compressed, but every backwards seek would decompress it again.
        """
        raw = open(self._path, "rb")  # returned, or closed with the decompressor
        head = raw.read(8)
        raw.seek(0)
        decompress = next((open_ for magic, open_ in ARCHIVE_COMPRESSIONS.items() if head.startswith(magic)), None)
        if decompress is None:
            return raw
        plain = tempfile.TemporaryFile(dir=self._path.parent)  # O_TMPFILE: never has a name
        try:
            allowance = _Allowance("the archive's contents", self._max_bytes)
            with raw, decompress(raw) as stream:
                while chunk := stream.read(READ_CHUNK):
                    allowance.take(len(chunk))
                    plain.write(chunk)
        except DECOMPRESSION_ERRORS as exc:
            plain.close()
            if _is_io_error(exc):
                raise
            raise InvalidImage(f"the upload's compressed data is corrupt: {exc}") from exc
        except BaseException:
            plain.close()
            raise
        plain.seek(0)
        return plain

    def _index_members(self) -> None:
        """Every member by its cleaned name: at most ``MAX_MEMBERS``, no file named twice."""
        assert self._tar is not None
        for count in itertools.count(1):
            member = self._tar.next()
            if member is None:
                return
            if count > MAX_MEMBERS:
                raise InvalidImage(f"the archive has more than {MAX_MEMBERS} members: it is no image")
            name = clean_name(member.name)
            earlier = self._members.get(name)
            if earlier is not None and not (earlier.isdir() and member.isdir()):
                raise InvalidImage(f"the archive has two members named {member.name!r}: which one is meant?")
            if OMITTED_LAYER in member.pax_headers:
                _check_omitted(member)
            self._members[name] = member

    @property
    def layer_count(self) -> int:
        return len(self._layers)

    def omitted(self, number: int) -> bool:
        """Whether layer ``number`` (from 1) was left out of the upload as one faasd holds."""
        return self._layers[number - 1].omitted

    def diff_id(self, number: int) -> str | None:
        """Layer ``number``'s diff_id ("sha256:<hex>", counted from 1): as the image config states
        it, or once the layer was read to its end, as measured; None for neither."""
        ref = self._layers[number - 1]
        return ref.diff_id or self._measured.get(number)

    def layers(self) -> Iterator[tarfile.TarFile]:
        """Each layer in order, as ``open_layer`` gives it."""
        for number in range(1, self.layer_count + 1):
            with self.open_layer(number) as layer:
                yield layer

    @contextlib.contextmanager
    def open_layer(self, number: int) -> Iterator[tarfile.TarFile]:
        """Layer ``number`` (from 1) as a streaming tar, decompressed.

        Its blob digest and diff_id are checked when the block ends without error: the rest of
        the stream is read and hashed first, so a consumer need not read a layer to its end for
        the check to cover all of it. A layer never opened is never read, nor checked: the
        store already holds it, verified against the same diff_id when it was first unpacked.
        """
        ref = self._layers[number - 1]
        assert not ref.omitted, "a layer left out of the upload is taken from the layer store"
        context = f"layer {number} ({_abbreviate(ref.member)})"
        stored = self._open_member(ref.member)
        head = stored.peek(4)[:4]  # type: ignore[attr-defined]  # ExFileObject is a BufferedReader
        if head == ZSTD_MAGIC:
            raise InvalidImage(
                f"{context}: zstd-compressed layers are not supported; save the image with gzip or uncompressed layers"
            )
        blob = _HashingReader(stored)
        source: _Readable = blob
        if head[:2] == GZIP_MAGIC:
            source = gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[call-overload]  # never seeks
        plain = _HashingReader(source, self._uncompressed)
        try:
            layer = tarfile.open(fileobj=plain, mode="r|", tarinfo=_BoundedTarInfo)  # type: ignore[call-overload]
        except tarfile.TarError as exc:
            raise InvalidImage(f"{context}: not a tar stream: {exc}") from exc
        except FaasError as exc:
            raise exc.in_context(context) from exc
        with layer:
            yield layer
        try:
            plain.drain()
            blob.drain()
        except FaasError as exc:
            raise exc.in_context(context) from exc
        _check_digest(context, "blob digest", ref.blob_digest, blob.hash.hexdigest())
        _check_digest(context, "diff_id", ref.diff_id, plain.hash.hexdigest())
        self._measured[number] = f"sha256:{plain.hash.hexdigest()}"

    # -- docker save: manifest.json, <config>.json, <id>/layer.tar (or blobs/sha256/<hex>) --

    def _read_legacy(self) -> None:
        manifest = parse_json(self._read_member("manifest.json"), "manifest.json")
        if not isinstance(manifest, list) or not manifest or not all(isinstance(e, dict) for e in manifest):
            raise InvalidImage("manifest.json is not a non-empty list of images")
        entry = self._choose([(e, _tags(e.get("RepoTags"))) for e in manifest])
        config_name, layers = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layers, list):
            raise InvalidImage("manifest.json: the image entry lacks Config or Layers")
        if not all(isinstance(layer, str) for layer in layers):
            raise InvalidImage("manifest.json: Layers is not a list of member names")
        config_bytes = self._read_member(config_name)
        self.digest = f"sha256:{_sha256(config_bytes)}"
        # Docker >= 25 names layers blobs/sha256/<hex>: such a name is a digest to check too.
        self._set_config(parse_json(config_bytes, config_name), [(layer, digest_from_name(layer)) for layer in layers])

    # -- OCI image layout: oci-layout, index.json, blobs/sha256/<hex> --

    def _read_oci(self) -> None:
        index = parse_json(self._read_member("index.json"), "index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise InvalidImage("index.json lists no manifests")
        # A top-level index may list one manifest per platform: keep those this machine runs.
        here = [d for d in manifests if isinstance(d, dict) and _platform_fits(d, required=False)]
        if not here:
            raise InvalidImage(f"index.json has no image for {_host_platform()}")
        manifest = self._resolve_manifest(self._choose([(d, _ref_names(d)) for d in here]))
        config, layers = manifest.get("config"), manifest.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
            raise InvalidImage("the image manifest lacks config or layers")
        config_bytes = self._blob(config)
        self.digest = str(config["digest"])
        self._set_config(
            parse_json(config_bytes, f"config {_abbreviate(self.digest)}"),
            [(_blob_member(d), str(d["digest"])) for d in layers],
        )

    def _resolve_manifest(self, descriptor: dict[str, Any]) -> dict[str, Any]:
        """Follow nested indexes (multi-platform images) down to one image manifest."""
        for _ in range(MAX_INDEX_DEPTH):
            name = f"manifest {_abbreviate(str(descriptor.get('digest')))}"
            document = parse_json(self._blob(descriptor), name)
            if not isinstance(document, dict):
                raise InvalidImage(f"{name} is not a JSON object")
            media_type = descriptor.get("mediaType") or document.get("mediaType")
            if media_type in INDEX_TYPES or (media_type is None and "manifests" in document):
                descriptor = pick_platform(document.get("manifests"))
                continue
            if media_type is not None and media_type not in MANIFEST_TYPES:
                raise InvalidImage(f"{name}: unsupported media type {media_type!r}")
            return document
        raise InvalidImage(f"the image index nests indexes more than {MAX_INDEX_DEPTH} deep")

    def _blob(self, descriptor: dict[str, Any]) -> bytes:
        """A small blob (index, manifest, config), read whole and checked against its digest."""
        data = self._read_member(_blob_member(descriptor))
        digest = str(descriptor["digest"])
        _check_digest(f"blob {_abbreviate(digest)}", "digest", digest, _sha256(data))
        return data

    # -- both layouts --

    def _choose(self, images: list[tuple[dict[str, Any], tuple[str, ...]]]) -> dict[str, Any]:
        """The one image to import: the only one, or the one named by ``tag`` (best match first)."""
        tag = self._tag
        if tag is None:
            if len(images) == 1:
                return images[0][0]
            raise InvalidImage(f"the archive holds {len(images)} images ({_names(images)}); choose one with --tag")
        ranked = [
            (rank, number)
            for number, (_, names) in enumerate(images)
            for name in names
            if (rank := _tag_rank(name, tag)) is not None
        ]
        if ranked:
            return images[min(ranked)[1]][0]
        raise InvalidImage(f"no image tagged {tag!r} in the archive (tags: {_names(images)})")

    def _set_config(self, document: Any, layers: list[tuple[str, str | None]]) -> None:
        if not isinstance(document, dict):
            raise InvalidImage("the image config is not a JSON object")
        self.config = ImageConfig.from_image_config(document)
        rootfs = document.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if diff_ids is not None:
            if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
                raise InvalidImage("the image config's rootfs.diff_ids is not a list of digests")
            if len(diff_ids) != len(layers):
                raise InvalidImage(f"the image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
        for number, (member, blob_digest) in enumerate(layers, start=1):
            found = self._resolve(member)  # fail now, before anything is unpacked, if a layer is missing
            diff_id = diff_ids[number - 1] if diff_ids is not None else None
            omitted = found.pax_headers.get(OMITTED_LAYER)
            if omitted is not None and omitted != diff_id:
                raise InvalidImage(
                    f"layer {number} ({_abbreviate(member)}) was left out of the upload as {omitted}, but the image "
                    f"config gives its diff_id as {diff_id}: send the whole archive"
                )
            self._layers.append(_Layer(member, blob_digest, diff_id, omitted is not None))

    def _resolve(self, name: str) -> tarfile.TarInfo:
        """The regular member ``name`` stands for, following links between members.

        podman's docker-archive stores a layer used twice once and links the second name to it.
        tarfile would follow such links too, but without a bound on chains and loops.
        """
        member = self._members.get(clean_name(name))
        if member is None:
            raise InvalidImage(f"the archive has no member {name!r}, which its manifest names")
        for _ in range(MAX_LINK_HOPS):
            if member.isfile():
                return member
            if member.issym():  # relative to the link's own directory, as a filesystem would
                target = posixpath.join(posixpath.dirname(member.name), member.linkname)
            elif member.islnk():
                target = member.linkname
            else:
                raise InvalidImage(f"the archive member {name!r} is not a file")
            found = self._members.get(clean_name(target))
            if found is None:
                raise InvalidImage(f"the archive member {name!r} links to {target!r}, which is missing")
            member = found
        raise InvalidImage(f"the archive member {name!r} is a chain of more than {MAX_LINK_HOPS} links")

    def _open_member(self, name: str) -> IO[bytes]:
        assert self._tar is not None, "ImageArchive is used outside its with block"
        stream = self._tar.extractfile(self._resolve(name))
        assert stream is not None  # _resolve returns regular files only
        return stream

    def _read_member(self, name: str) -> bytes:
        """A document member (manifest, index, config), read whole: at most ``MAX_DOCUMENT`` bytes."""
        member = self._resolve(name)
        if OMITTED_LAYER in member.pax_headers:
            raise InvalidImage(f"the archive member {name!r} was left out of the upload, but only layers may be")
        if member.size > MAX_DOCUMENT:
            raise ImageTooLarge(
                f"the archive member {_abbreviate(name)!r} is {member.size} bytes: manifests, indexes and image "
                f"configs may be at most {MAX_DOCUMENT}"
            )
        with self._open_member(name) as stream:
            return stream.read(MAX_DOCUMENT)


def check_reference(value: str, what: str = "tag") -> None:
    """Refuse a ``--tag`` (or another image reference, named by ``what``) that no image could have."""
    if len(value) > MAX_REFERENCE or not (DOCKER_REFERENCE.fullmatch(value) or OCI_REF_NAME.fullmatch(value)):
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise InvalidRequest(
            f"the {what} {shown!r} is not an image reference: use NAME[:TAG], e.g. demo:1 or localhost/team/demo:1"
        )


def _check_omitted(member: tarfile.TarInfo) -> None:
    """A member that stands for a layer left out: empty, regular, and naming a diff_id."""
    value = member.pax_headers[OMITTED_LAYER]
    if not (member.isreg() and member.size == 0 and DIGEST.fullmatch(value)):
        raise InvalidImage(
            f"the archive member {member.name!r} claims to be a layer left out of the upload, but is not an empty "
            f"file naming a diff_id (sha256:<64 hex digits>): send the whole archive"
        )


def clean_name(name: str) -> str:
    """A member name as a lookup key: "./a//b" and "a/b" are the same member."""
    return posixpath.normpath(name.lstrip("/"))


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidImage(f"{what} is not valid JSON: {exc}") from exc


def _blob_member(descriptor: dict[str, Any]) -> str:
    """Where image-layout.md puts a blob; the digest is checked for shape before it names anything."""
    digest = str(descriptor.get("digest"))
    if not DIGEST.fullmatch(digest):
        raise InvalidImage(f"unsupported or malformed digest {digest!r} (sha256 expected)")
    return blob_member(digest)


def blob_member(digest: str) -> str:
    """The member image-layout.md names for the blob ``digest`` ("sha256:<hex>", checked by the caller)."""
    return f"blobs/{digest.replace(':', '/', 1)}"


def digest_from_name(member: str) -> str | None:
    """The digest a ``blobs/sha256/<hex>`` name gives its blob; None for other names."""
    directory, _, name = clean_name(member).rpartition("/")
    return f"sha256:{name}" if directory == "blobs/sha256" and re.fullmatch(r"[0-9a-f]{64}", name) else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(context: str, what: str, expected: str | None, actual_hex: str) -> None:
    if expected is not None and expected != f"sha256:{actual_hex}":
        raise InvalidImage(f"{context}: {what} mismatch (expected {expected}, got sha256:{actual_hex})")


def _abbreviate(text: str) -> str:
    """Shorten the 64-hex digests in a name for messages: blobs/sha256/ab12cd34ef56…"""
    return re.sub(r"[0-9a-f]{64}", lambda m: m[0][:12] + "…", text)


def _tags(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _tag_rank(name: str, tag: str) -> int | None:
    """How well ``tag`` names ``name``: 0 exactly, 1 with ":latest" implied, 2 below a registry
    or namespace ("demo:1" finds "localhost/demo:1" and "docker.io/library/demo:1"), None not."""
    if name == tag:
        return 0
    if name == f"{tag}:latest":
        return 1
    if name.endswith((f"/{tag}", f"/{tag}:latest")):
        return 2
    return None


def _ref_names(descriptor: dict[str, Any]) -> tuple[str, ...]:
    annotations = descriptor.get("annotations")
    if not isinstance(annotations, dict):
        return ()
    return tuple(str(annotations[key]) for key in REF_NAME_ANNOTATIONS if key in annotations)


def _names(images: list[tuple[dict[str, Any], tuple[str, ...]]]) -> str:
    return ", ".join(", ".join(names) if names else "<untagged>" for _, names in images)


def _host_platform() -> str:
    return f"linux/{ARCH_NAMES.get(platform.machine(), platform.machine())}"


def _platform_fits(descriptor: dict[str, Any], required: bool) -> bool:
    """Whether the descriptor's platform is this machine's (a missing platform fits unless required)."""
    wanted = descriptor.get("platform")
    if not isinstance(wanted, dict):
        return not required
    return f"{wanted.get('os')}/{wanted.get('architecture')}" == _host_platform()


def pick_platform(manifests: Any) -> dict[str, Any]:
    """The manifest for linux on this machine's architecture, from a multi-platform index.

    Entries for other platforms, and buildx's attestation manifests ("unknown/unknown"), are
    passed over; an index of one manifest without a platform is taken as it is.
    """
    candidates = [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else []
    for descriptor in candidates:
        if _platform_fits(descriptor, required=True):
            return descriptor
    if len(candidates) == 1 and _platform_fits(candidates[0], required=False):
        return candidates[0]
    raise InvalidImage(f"the image index has no manifest for {_host_platform()}")
