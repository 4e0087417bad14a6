"""Image references as ``docker pull`` reads them: ``[REGISTRY/]PATH[:TAG][@sha256:HEX]``.

The grammar and the normalisation are distribution/reference's (``reference.go``,
``normalize.go``): the first component names a registry only when it holds a ``.`` or a ``:``
or is ``localhost``; without one the registry is Docker Hub, where a one-component path is
under ``library/``; a reference with neither tag nor digest means ``:latest``. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faasd.errors import InvalidRequest

DOCKER_HUB = "docker.io"
# Docker Hub's distribution API is served under another name than the one references use.
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_PATH = 255
EXAMPLE = "e.g. 127.0.0.1:5000/team/app:1 or 127.0.0.1:5000/team/app@sha256:<64 hex digits>"


@dataclass(frozen=True)
class Reference:
    """A parsed reference: where the image lives, and the tag or digest that picks it."""

    registry: str  # host[:port], as written (docker.io when none was)
    repository: str  # the path within the registry, library/ added on Docker Hub
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """The reference ``text`` names; ``InvalidRequest`` naming the part at fault otherwise."""
        if len(text) > MAX_PATH + 1 + 128 + 1 + 71:
            raise InvalidRequest(f"the image reference is {len(text)} characters long: it is no reference")
        rest, _, digest = text.partition("@")
        if digest and not _DIGEST.fullmatch(digest):
            raise InvalidRequest(f"{text!r}: the digest after '@' must be sha256:<64 hex digits>")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
            if not _DOMAIN.fullmatch(registry):
                raise InvalidRequest(f"{text!r}: {registry!r} is not a registry host[:port], {EXAMPLE}")
        else:
            registry, path = DOCKER_HUB, rest
        tag = None
        last_slash = path.rfind("/")
        if ":" in path[last_slash + 1 :]:
            path, _, tag = path.rpartition(":")
            if not _TAG.fullmatch(tag):
                raise InvalidRequest(f"{text!r}: the tag {tag!r} may hold letters, digits, '_', '.' and '-' only")
        if not path or len(path) > MAX_PATH or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
            raise InvalidRequest(
                f"{text!r} is not an image reference: the path takes lowercase letters, digits and separators, "
                f"{EXAMPLE}"
            )
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if tag is None and not digest:
            tag = "latest"
        return cls(registry, path, tag, digest or None)

    @property
    def api_host(self) -> str:
        """The host[:port] whose ``/v2/`` serves this registry."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def selector(self) -> str:
        """What the manifest is asked for by: the digest when given (it pins the image), else the tag."""
        return self.digest or str(self.tag)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.registry}/{self.repository}{tag}{digest}"
