"""``faas new --pull``: the credentials a pull carries, and its progress, one line per layer.

Credentials come from the user's Docker ``config.json`` (``$DOCKER_CONFIG``, else
``~/.docker/config.json``), its ``auths`` entry for the registry, as ``docker login`` wrote it;
they travel with the one request and faasd writes them nowhere. Without an entry, faasd uses
the login ``faas login`` gave it, if any. Credential helpers (``credsStore``) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from faas_cli.progress import format_bytes
from faasd.images.reference import DOCKER_HUB

# What docker login writes as the key of Docker Hub's entry.
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def docker_config_path(environ: dict[str, str] | None = None) -> Path:
    environ = dict(os.environ) if environ is None else environ
    if environ.get("DOCKER_CONFIG"):
        return Path(environ["DOCKER_CONFIG"]) / "config.json"
    return Path(environ.get("HOME") or Path.home()) / ".docker" / "config.json"


def docker_credentials(registry: str, config_path: Path) -> dict[str, str] | None:
    """The user name and password ``config.json`` holds for ``registry``; None without an entry."""
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = DOCKER_HUB_KEYS if registry == DOCKER_HUB else (registry, f"https://{registry}", f"http://{registry}")
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict) and (credentials := _entry_credentials(entry)) is not None:
            return credentials
    return None


def _entry_credentials(entry: dict[str, Any]) -> dict[str, str] | None:
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return {"username": entry["username"], "password": entry["password"]}
    try:
        username, sep, password = base64.b64decode(str(entry.get("auth", "")), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return {"username": username, "password": password} if sep and username else None


def short(digest: str) -> str:
    """``sha256:0123456789ab``: enough of a digest to tell the layers of one image apart."""
    return digest[:19]


class PullProgress:
    """Prints a pull's events on ``stream``: at a terminal, one line per layer redrawn in place;
    otherwise a line as each layer is held or fetched."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self._stream = stream
        self._live = live
        self._layers: dict[str, tuple[int, int, bool]] = {}  # digest -> done, size, held
        self._drawn = 0

    def track(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``events`` unchanged, shown as they pass."""
        for event in events:
            kind = event.get("event")
            if kind == "resolved":
                self._resolved(event)
            elif kind == "layer":
                self._layer(event)
            yield event

    def _resolved(self, event: dict[str, Any]) -> None:
        self._write(f"{event['reference']}: {event['digest']}\n")
        for layer in event["layers"]:
            self._layers.setdefault(layer["digest"], (0, layer["size"], layer["held"]))
        if not self._live:
            for digest, (_, size, held) in self._layers.items():
                if held:
                    self._write(f"{short(digest)}  held ({format_bytes(size)})\n")
        elif event["changed"]:
            self._draw()

    def _layer(self, event: dict[str, Any]) -> None:
        digest, done, size = event["digest"], event["done"], event["size"]
        self._layers[digest] = (done, size, False)
        if self._live:
            self._draw()
        elif done == size:
            self._write(f"{short(digest)}  pulled ({format_bytes(size)})\n")

    def _draw(self) -> None:
        lines = [self._line(digest, *state) for digest, state in self._layers.items()]
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        self._write(up + "".join(f"\r\x1b[2K{line}\n" for line in lines))
        self._drawn = len(lines)

    @staticmethod
    def _line(digest: str, done: int, size: int, held: bool) -> str:
        if held:
            return f"{short(digest)}  held ({format_bytes(size)})"
        if done >= size:
            return f"{short(digest)}  pulled ({format_bytes(size)})"
        return f"{short(digest)}  {format_bytes(done)} / {format_bytes(size)}"

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
