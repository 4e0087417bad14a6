"""A client of the OCI distribution API (distribution-spec spec.md): manifests and blobs, read only.

Authentication follows the registry's ``WWW-Authenticate`` challenge on a 401, as Docker's
token spec (distribution ``docs/spec/auth/token.md``) and RFC 7617 describe it:

- ``Basic``: the request is sent again with the credentials, if there are any;
- ``Bearer realm=...,service=...,scope=...``: a token is fetched from the realm (with the
  credentials as basic auth, or anonymously) for ``repository:PATH:pull``, and the request sent
  again with it. The token is kept for the rest of the pull.

HTTPS with the system's CAs, and plain HTTP only to a registry the daemon was told is
insecure (``faasd --insecure-registry``). Every answer is bounded: manifests and configs are
read whole up to a few MiB; blobs are streamed by the caller. Failures are mapped here, once,
to the ``FaasError`` that names the cause: no such image (404), credentials refused (403),
registry down, slow or out of protocol (502).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import aiohttp

from faasd.errors import FaasError, InvalidImage, NotFound, RegistryDenied, RegistryUnavailable
from faasd.images.archive import INDEX_TYPES, MANIFEST_TYPES
from faasd.images.logins import Credentials
from faasd.images.reference import Reference

# Asked for in this order of preference; a registry answers with one and says which.
MANIFEST_ACCEPT = ", ".join([*sorted(MANIFEST_TYPES), *sorted(INDEX_TYPES)])
MAX_MANIFEST = 4 << 20  # containerd's limit on a manifest or index
MAX_CONFIG = 8 << 20
MAX_TOKEN_ANSWER = 1 << 20
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry sent it: bytes, media type, and their digest."""

    data: bytes
    media_type: str
    digest: str


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme and parameters of a ``WWW-Authenticate`` header (one challenge). Pure."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        match[1].lower(): match[2] if match[2] is not None else match[3] for match in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


class DistributionClient:
    """One repository of one registry, for the length of one pull or login check."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        reference: Reference,
        credentials: Credentials | None,
        insecure: bool,
    ) -> None:
        self._session = session
        self._reference = reference
        self._credentials = credentials
        self._base = f"{'http' if insecure else 'https'}://{reference.api_host}"
        self._insecure = insecure
        self._authorization: str | None = None

    @property
    def registry(self) -> str:
        return self._reference.registry

    async def check_login(self) -> None:
        """Whether the registry takes the credentials: ``GET /v2/`` as ``docker login`` asks it."""
        async with self._get("/v2/", {}, scope=None):
            pass

    async def manifest(self, selector: str) -> Manifest:
        """The manifest or index named by a tag or digest; a digest is checked against the bytes."""
        path = f"/v2/{self._reference.repository}/manifests/{selector}"
        async with self._get(path, {"Accept": MANIFEST_ACCEPT}) as response:
            data = await self._read_bounded(response, MAX_MANIFEST, "the manifest")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if selector.startswith("sha256:") and selector != digest:
            raise InvalidImage(f"{self._reference}: the registry sent a manifest whose digest is {digest}")
        return Manifest(data, media_type, digest)

    async def small_blob(self, digest: str, size: int) -> bytes:
        """A config blob, read whole and checked against its digest and size."""
        if not 0 <= size <= MAX_CONFIG:
            raise InvalidImage(f"the image config {digest} claims {size} bytes (at most {MAX_CONFIG})")
        async with self.blob(digest) as response:
            data = await self._read_bounded(response, size, f"blob {digest}")
        actual = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if actual != digest or len(data) != size:
            raise InvalidImage(f"blob {digest}: the registry sent {len(data)} bytes hashing to {actual}")
        return data

    @contextlib.asynccontextmanager
    async def blob(self, digest: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response whose body is blob ``digest``, for the caller to stream and check."""
        async with self._get(f"/v2/{self._reference.repository}/blobs/{digest}", {}) as response:
            yield response

    @contextlib.asynccontextmanager
    async def _get(
        self, path: str, headers: dict[str, str], scope: str | None = "pull"
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``path``, answering one authentication challenge; errors mapped to ``FaasError``."""
        url = self._base + path
        try:
            for attempt in (1, 2):
                sent = dict(headers)
                if self._authorization is not None:
                    sent["Authorization"] = self._authorization
                async with self._session.get(url, headers=sent) as response:
                    if response.status == 401 and attempt == 1:
                        challenge = response.headers.get("WWW-Authenticate", "")
                        await self._authenticate(challenge, scope)
                        continue
                    self._check_status(response, path)
                    yield response
                    return
        except FaasError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def _check_status(self, response: aiohttp.ClientResponse, path: str) -> None:
        status = response.status
        if status < 300:
            return
        where = f"registry {self.registry}"
        if status == 401:
            if self._credentials is None:
                raise RegistryDenied(
                    f"{where} wants credentials for {self._reference.repository}: "
                    f"run 'faas login {self.registry}' (or docker login)"
                )
            raise RegistryDenied(f"{where} refused the credentials of {self._credentials.username!r}")
        if status == 403:
            raise RegistryDenied(f"{where} denies access to {self._reference.repository}")
        if status == 404:
            what = "repository or manifest" if "/manifests/" in path else "blob"
            raise NotFound(f"{where} has no {what} for {self._reference} ({path.rsplit('/', 1)[-1]})")
        raise RegistryUnavailable(f"{where} answered {status} {response.reason} to GET {path}")

    async def _authenticate(self, challenge: str, scope: str | None) -> None:
        """Set the Authorization the challenge asks for, or raise when there is none to give."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                raise RegistryDenied(
                    f"registry {self.registry} wants a user name and password: run 'faas login {self.registry}'"
                )
            self._authorization = aiohttp.BasicAuth(self._credentials.username, self._credentials.password).encode()
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryUnavailable(f"registry {self.registry} asks for an unknown authentication: {challenge!r}")
        self._authorization = f"Bearer {await self._token(params, scope)}"

    async def _token(self, params: dict[str, str], scope: str | None) -> str:
        """A bearer token from the challenge's realm (token.md: token or access_token)."""
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme != "https" and not (parts.scheme == "http" and self._insecure):
            raise RegistryUnavailable(
                f"registry {self.registry} sends clients to {realm!r} for a token: only https is used "
                f"(or http, for a registry faasd was started with --insecure-registry for)"
            )
        query = {"service": params["service"]} if "service" in params else {}
        if scope is not None:
            query["scope"] = params.get("scope") or f"repository:{self._reference.repository}:{scope}"
        auth = None
        if self._credentials is not None:
            auth = aiohttp.BasicAuth(self._credentials.username, self._credentials.password)
        url = realm + ("&" if parts.query else "?") + urlencode(query) if query else realm
        async with self._session.get(url, auth=auth) as response:
            if response.status in (401, 403):
                user = f" of {self._credentials.username!r}" if self._credentials else ""
                raise RegistryDenied(f"registry {self.registry}'s token service refused the credentials{user}")
            if response.status >= 300:
                raise RegistryUnavailable(f"the token service of registry {self.registry} answered {response.status}")
            data = await self._read_bounded(response, MAX_TOKEN_ANSWER, "the token service's answer")
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token.isprintable() or not token:
            raise RegistryUnavailable(f"the token service of registry {self.registry} sent no token")
        return token

    async def _read_bounded(self, response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        declared = response.content_length
        if declared is not None and declared > limit:
            raise InvalidImage(f"{what} from registry {self.registry} is {declared} bytes, over {limit}")
        data = bytearray()
        async for chunk in response.content.iter_chunked(64 << 10):
            data += chunk
            if len(data) > limit:
                raise InvalidImage(f"{what} from registry {self.registry} is over {limit} bytes")
        return bytes(data)

    def _unavailable(self, exc: BaseException) -> RegistryUnavailable:
        if isinstance(exc, asyncio.TimeoutError):
            return RegistryUnavailable(f"registry {self.registry} did not answer in time: is it overloaded or down?")
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return RegistryUnavailable(
                f"cannot speak TLS with registry {self.registry}: {exc}; a registry on plain HTTP must be "
                "named with faasd --insecure-registry"
            )
        return RegistryUnavailable(f"cannot reach registry {self.registry}: {exc}")
