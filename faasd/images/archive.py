"""Read an image tarball on disk: the legacy ``docker save`` layout or an OCI image layout.

Only member names inside the tarball are ever looked up here: nothing from a manifest is
joined to a filesystem path. Blob digests (OCI) and layer diff_ids (both layouts) are checked
while the layers stream by, so a tampered archive fails before its rootfs is registered.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from faasd.errors import InvalidImage

# image-spec media types we follow from an index; docker's equivalents are accepted too.
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
REF_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_CHUNK = 1 << 20
ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


@dataclass(frozen=True)
class ImageConfig:
    """What the image asks to run: the parts of the image config a container needs."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str
    user: str

    @classmethod
    def from_image_config(cls, document: dict[str, Any]) -> ImageConfig:
        """Take the ``config`` object of an image config (image-spec config.md); null is empty."""
        config = document.get("config") or {}
        if not isinstance(config, dict):
            raise InvalidImage("the image config's 'config' is not an object")
        return cls(
            entrypoint=_strings(config, "Entrypoint"),
            cmd=_strings(config, "Cmd"),
            env=_strings(config, "Env"),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )

    def to_json(self) -> str:
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


def _strings(config: dict[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidImage(f"the image config's {key} is not a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class LayerRef:
    """Where a layer is in the tarball and what it must hash to."""

    member: str
    blob_digest: str | None  # OCI: the digest of the (possibly compressed) blob
    diff_id: str | None  # the digest of the uncompressed tar, from the image config


class _HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, stream: IO[bytes], algorithm: str = "sha256") -> None:
        self._stream = stream
        self.hash = hashlib.new(algorithm)

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass


class ImageArchive:
    """Context manager over a docker-save or OCI-layout tar file on disk."""

    def __init__(self, path: Path, tag: str | None = None) -> None:
        self._path = path
        self._tag = tag
        self._tar: tarfile.TarFile | None = None
        self.config: ImageConfig
        self.digest: str
        self._layers: list[LayerRef] = []

    def __enter__(self) -> ImageArchive:
        try:
            self._tar = tarfile.open(self._path, "r:*")
        except (tarfile.TarError, OSError) as exc:
            raise InvalidImage(f"the upload is not a tar archive (docker save output expected): {exc}") from exc
        try:
            self._members = {_clean(m.name): m for m in self._tar.getmembers()}
            if "manifest.json" in self._members:
                self._read_legacy()
            elif "index.json" in self._members:
                self._read_oci()
            else:
                raise InvalidImage("the archive has neither manifest.json (docker save) nor index.json (OCI layout)")
        except tarfile.TarError as exc:
            self.__exit__(None, None, None)
            raise InvalidImage(f"the archive is damaged: {exc}") from exc
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def layers(self) -> Iterator[tarfile.TarFile]:
        """Each layer in order, as a streaming tar, decompressed and checked against its digests."""
        for index, ref in enumerate(self._layers, start=1):
            context = f"layer {index} ({ref.member})"
            raw = _HashingReader(self._open_member(ref.member))
            head = raw.read(4)
            if head.startswith(ZSTD_MAGIC):
                raise InvalidImage(
                    f"{context}: zstd-compressed layers are not supported; "
                    "save the image with gzip or uncompressed layers"
                )
            stream: IO[bytes] = _Prefixed(head, raw)
            if head.startswith(GZIP_MAGIC):
                stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
            plain = _HashingReader(stream)
            try:
                with tarfile.open(fileobj=plain, mode="r|") as layer:  # type: ignore[call-overload]
                    yield layer
                plain.drain()
                raw.drain()
            except (tarfile.TarError, OSError, EOFError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise  # a real I/O error (e.g. a full disk) is not the archive's fault
                raise InvalidImage(f"{context}: not a readable tar stream: {exc}") from exc
            _check_digest(context, "blob digest", ref.blob_digest, raw.hash.hexdigest())
            _check_digest(context, "diff_id", ref.diff_id, plain.hash.hexdigest())

    # -- the legacy layout: manifest.json, <config>.json, <id>/layer.tar --

    def _read_legacy(self) -> None:
        manifest = self._json("manifest.json")
        if not isinstance(manifest, list) or not manifest:
            raise InvalidImage("manifest.json is not a non-empty list of images")
        entries = [(e, tuple(e.get("RepoTags") or ())) for e in manifest if isinstance(e, dict)]
        entry = self._choose(entries)
        if not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
            raise InvalidImage("manifest.json: the image entry lacks Config or Layers")
        config_name = entry["Config"]
        document = self._json(config_name)
        self.digest = "sha256:" + hashlib.sha256(self._read_member(config_name)).hexdigest()
        # Docker >= 25 points manifest.json at blobs/sha256/<hex>: those names are digests too.
        self._set_config(document, [(str(layer), _digest_from_name(str(layer))) for layer in entry["Layers"]])

    # -- the OCI layout: oci-layout, index.json, blobs/<alg>/<hex> --

    def _read_oci(self) -> None:
        index = self._json("index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise InvalidImage("index.json lists no manifests")
        entries = [(d, _ref_names(d)) for d in manifests if isinstance(d, dict)]
        descriptor = self._choose(entries)
        manifest = self._resolve_manifest(descriptor, depth=0)
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(manifest.get("layers"), list):
            raise InvalidImage("the image manifest lacks config or layers")
        self.digest = str(config.get("digest"))
        document = json.loads(self._blob(config))
        layers = [(self._blob_member(d), str(d.get("digest"))) for d in manifest["layers"] if isinstance(d, dict)]
        self._set_config(document, layers)

    def _resolve_manifest(self, descriptor: dict[str, Any], depth: int) -> dict[str, Any]:
        """Follow nested indexes (multi-platform images) down to one image manifest."""
        document = json.loads(self._blob(descriptor))
        media_type = descriptor.get("mediaType") or document.get("mediaType")
        if media_type in INDEX_TYPES or (media_type is None and "manifests" in document):
            if depth > 4:
                raise InvalidImage("index.json nests indexes too deeply")
            return self._resolve_manifest(_pick_platform(document.get("manifests") or []), depth + 1)
        if media_type not in MANIFEST_TYPES and media_type is not None:
            raise InvalidImage(f"unsupported manifest media type {media_type!r}")
        return document

    def _blob(self, descriptor: dict[str, Any]) -> bytes:
        data = self._read_member(self._blob_member(descriptor))
        _check_digest(f"blob {descriptor.get('digest')}", "digest", str(descriptor["digest"]), _sha256(data))
        return data

    @staticmethod
    def _blob_member(descriptor: dict[str, Any]) -> str:
        digest = descriptor.get("digest")
        algorithm, _, hex_digest = str(digest).partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64 or not all(c in "0123456789abcdef" for c in hex_digest):
            raise InvalidImage(f"unsupported or malformed digest {digest!r} (sha256 expected)")
        return f"blobs/sha256/{hex_digest}"

    # -- shared --

    def _choose(self, entries: list[tuple[dict[str, Any], tuple[str, ...]]]) -> dict[str, Any]:
        """The one image to import: the only one, or the one named by ``tag``."""
        if self._tag is None:
            if len(entries) == 1:
                return entries[0][0]
            names = ", ".join(t for _, tags in entries for t in tags) or "untagged"
            raise InvalidImage(f"the archive holds {len(entries)} images ({names}); choose one with --tag")
        for entry, tags in entries:
            if any(_tag_matches(t, self._tag) for t in tags):
                return entry
        available = ", ".join(t for _, tags in entries for t in tags) or "none"
        raise InvalidImage(f"no image tagged {self._tag!r} in the archive (tags: {available})")

    def _set_config(self, document: Any, layers: list[tuple[str, str | None]]) -> None:
        if not isinstance(document, dict):
            raise InvalidImage("the image config is not a JSON object")
        self.config = ImageConfig.from_image_config(document)
        diff_ids = (document.get("rootfs") or {}).get("diff_ids")
        if diff_ids is not None and len(diff_ids) != len(layers):
            raise InvalidImage(f"the image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
        for index, (member, blob_digest) in enumerate(layers):
            self._member(member)
            diff_id = str(diff_ids[index]) if diff_ids is not None else None
            self._layers.append(LayerRef(member, blob_digest, diff_id))

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self._members.get(_clean(name))
        if member is None:
            raise InvalidImage(f"the archive has no member {name!r}, which its manifest names")
        return member

    def _open_member(self, name: str) -> IO[bytes]:
        assert self._tar is not None
        try:
            stream = self._tar.extractfile(self._member(name))
        except KeyError as exc:  # a link member whose target is missing
            raise InvalidImage(f"the archive member {name!r} links to a missing member") from exc
        if stream is None:
            raise InvalidImage(f"the archive member {name!r} is not a file")
        return stream

    def _read_member(self, name: str) -> bytes:
        with self._open_member(name) as stream:
            return stream.read()

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self._read_member(name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidImage(f"{name} is not valid JSON: {exc}") from exc


class _Prefixed:
    """Puts back the bytes read to sniff the compression."""

    def __init__(self, prefix: bytes, stream: _HashingReader) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if not self._prefix:
            return self._stream.read(size)
        if 0 <= size < len(self._prefix):
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        head, self._prefix = self._prefix, b""
        return head + self._stream.read(-1 if size < 0 else size - len(head))


def _clean(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")).removeprefix("./")


def _digest_from_name(member: str) -> str | None:
    directory, _, name = _clean(member).rpartition("/")
    return f"sha256:{name}" if directory == "blobs/sha256" and len(name) == 64 else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(context: str, what: str, expected: str | None, actual_hex: str) -> None:
    if expected is not None and expected != f"sha256:{actual_hex}":
        raise InvalidImage(f"{context}: {what} mismatch (expected {expected}, got sha256:{actual_hex})")


def _tag_matches(reference: str, tag: str) -> bool:
    """Whether ``tag`` names ``reference``, allowing a registry prefix and an implied ``:latest``."""
    return any(reference == w or reference.endswith(f"/{w}") for w in (tag, f"{tag}:latest"))


def _ref_names(descriptor: dict[str, Any]) -> tuple[str, ...]:
    annotations = descriptor.get("annotations") or {}
    return tuple(str(annotations[key]) for key in REF_NAME_ANNOTATIONS if key in annotations)


def _pick_platform(manifests: list[Any]) -> dict[str, Any]:
    """The manifest for linux on this machine's architecture, from a multi-platform index."""
    arch = ARCH_NAMES.get(platform.machine(), platform.machine())
    candidates = [m for m in manifests if isinstance(m, dict)]
    for descriptor in candidates:
        wanted = descriptor.get("platform") or {}
        if wanted.get("os") == "linux" and wanted.get("architecture") == arch:
            return descriptor
    if len(candidates) == 1 and "platform" not in candidates[0]:
        return candidates[0]
    raise InvalidImage(f"the image index has no manifest for linux/{arch}")
