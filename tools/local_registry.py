"""A real image registry for tests and benchmarks: Debian's docker-registry on loopback, with
htpasswd basic auth, or with the bearer-token flow and a small token service beside it.

Images get there as users put them: ``skopeo copy`` from an archive, or, for what skopeo will
not write (an index for another platform, an uncompressed layer), the distribution API's own
upload calls.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "alice", "correct horse"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """The token service of distribution's token auth (docs/spec/auth/token.md), in a thread.

    It signs JWTs (RS256, the certificate in the ``x5c`` header) with openssl for whatever scope
    is asked, given the right basic credentials; without credentials, only ``pull`` of a
    repository under ``public/``; with wrong ones, 401. docker-registry checks the tokens
    against the certificate, as it would a real service's.
    """

    ISSUER, SERVICE = "faasd-tests-issuer", "faasd-tests"

    def __init__(self, root: Path) -> None:
        self.key, self.cert = root / "token-key.pem", root / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=faasd-tests",
             "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        )
        self._chain = [base64.b64encode(der.stdout).decode()]
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = service.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if authorization is not None and authorization != expected:
            return 401, b'{"details": "wrong user name or password"}'
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            if authorization is None:
                actions = "pull" if name.startswith("public/") and "pull" in actions.split(",") else ""
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._chain}
        claims = {
            "iss": self.ISSUER, "sub": USER if authorization else "", "aud": self.SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": f"{now}-{time.monotonic_ns()}", "access": access,
        }  # fmt: skip
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signed = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing.encode(),
            check=True,
            capture_output=True,
        )
        return 200, json.dumps({"token": f"{signing}.{_b64url(signed.stdout)}"}).encode()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class LocalRegistry:
    """docker-registry serving ``root`` on 127.0.0.1:``port``; ``start``/``stop`` may repeat.

    With ``tokens``, it asks clients for a bearer token from that service instead of basic auth.
    """

    root: Path
    port: int
    tokens: TokenService | None = None
    tls: bool = False  # HTTPS with a certificate of its own (``certificate``), which no CA signed
    proc: subprocess.Popen[bytes] | None = None

    @property
    def certificate(self) -> Path:
        return self.root / "tls-cert.pem"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if not (self.root / "htpasswd").exists():
            htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True)
            (self.root / "htpasswd").write_bytes(htpasswd.stdout)
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
            "http": {"addr": self.host},
            "auth": {"htpasswd": {"realm": "faasd-tests", "path": str(self.root / "htpasswd")}},
        }
        if self.tls:
            if not self.certificate.exists():
                subprocess.run(
                    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                     "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                     "-keyout", str(self.root / "tls-key.pem"), "-out", str(self.certificate)],
                    check=True, capture_output=True,
                )  # fmt: skip
            config["http"] = {
                "addr": self.host,
                "tls": {"certificate": str(self.certificate), "key": str(self.root / "tls-key.pem")},
            }
        if self.tokens is not None:
            config["auth"] = {
                "token": {
                    "realm": self.tokens.realm,
                    "service": TokenService.SERVICE,
                    "issuer": TokenService.ISSUER,
                    "rootcertbundle": str(self.tokens.cert),
                }
            }
        (self.root / "config.yml").write_text(json.dumps(config))  # YAML reads JSON
        with open(self.root / "registry.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/v2/")[0] in (200, 401):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start:\n{(self.root / 'registry.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None
        if self.tokens is not None:
            self.tokens.stop()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        conn = (
            http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=ssl._create_unverified_context())
            if self.tls
            else http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        )
        try:
            conn.request(method, path, body=body, headers={"Authorization": f"Basic {auth}", **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def push_archive(self, archive: Path, repository: str, tag: str, transport: str = "docker-archive") -> str:
        """``skopeo copy`` an archive here (docker save's, or ``oci-archive``); the reference it is pulled by."""
        reference = f"{self.host}/{repository}:{tag}"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                f"{USER}:{PASSWORD}",
                f"{transport}:{archive}",
                f"docker://{reference}",
            ],
            check=True,
            capture_output=True,
        )
        return reference

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload ``data`` as a blob (a monolithic upload: POST, then PUT with the digest)."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        status, headers, _ = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        assert status == 202, status
        location = headers["Location"]
        separator = "&" if "?" in location else "?"
        path = location.split(self.host, 1)[-1] + f"{separator}digest={digest}"
        status, _, body = self.request("PUT", path, data, {"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        accept = f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"
        status, headers, body = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept}
        )
        assert status == 200, status
        return body, headers["Content-Type"]

    def put_manifest(self, repository: str, reference: str, document: dict[str, object], media_type: str) -> str:
        data = json.dumps(document).encode()
        status, _, body = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", data, {"Content-Type": media_type}
        )
        assert status == 201, (status, body)
        return f"sha256:{hashlib.sha256(data).hexdigest()}"

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps blob ``digest`` on disk (distribution's filesystem driver)."""
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def start_registry(root: Path, tokens: bool = False, tls: bool = False) -> LocalRegistry:
    """A registry on a free loopback port: basic auth, or with ``tokens`` the bearer-token flow;
    with ``tls``, on HTTPS."""
    if shutil.which("docker-registry") is None:
        raise RuntimeError("docker-registry is not installed: scripts/prepare.sh installs it")
    root.mkdir(parents=True, exist_ok=True)
    registry = LocalRegistry(root, free_port(), TokenService(root) if tokens else None, tls)
    registry.start()
    return registry
