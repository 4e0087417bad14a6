"""Registry credentials: those ``faas login`` gave, kept in one root-only file of the state dir.

``STATE/registry-logins.json`` maps a registry (``host[:port]``) to a user name and password.
It is created 0600 under a temporary name, synced and renamed into place, so it never exists
with a looser mode nor half-written. Credentials a client sends with one pull are used for
that pull and written nowhere.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from faasd.errors import InvalidRequest

PRIVATE_FILE = 0o600
MAX_FIELD = 4096


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry; the password never shows in a repr."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def from_json(cls, value: object, what: str) -> Credentials:
        """``{"username": ..., "password": ...}`` as a client sent it, checked."""
        if not isinstance(value, dict) or set(value) != {"username", "password"}:
            raise InvalidRequest(f"{what} must be an object with exactly 'username' and 'password'")
        username, password = value["username"], value["password"]
        for name, text in (("username", username), ("password", password)):
            if not isinstance(text, str) or not text or len(text) > MAX_FIELD or not text.isprintable():
                raise InvalidRequest(f"{what}: the {name} must be 1 to {MAX_FIELD} printable characters")
        if ":" in username:
            raise InvalidRequest(f"{what}: a user name cannot hold ':' (HTTP basic auth splits on it)")
        return cls(username, password)


class Logins:
    """The credentials ``faas login`` stored, by registry. Blocking: call through a thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def get(self, registry: str) -> Credentials | None:
        with self._lock:
            entry = self._read().get(registry)
        return None if entry is None else Credentials(entry["username"], entry["password"])

    def registries(self) -> list[str]:
        with self._lock:
            return sorted(self._read())

    def put(self, registry: str, credentials: Credentials) -> None:
        with self._lock:
            entries = self._read()
            entries[registry] = {"username": credentials.username, "password": credentials.password}
            self._write(entries)

    def remove(self, registry: str) -> bool:
        """Forget ``registry``'s credentials; whether there were any."""
        with self._lock:
            entries = self._read()
            if entries.pop(registry, None) is None:
                return False
            self._write(entries)
            return True

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            with open(self._path, encoding="utf-8") as file:
                entries = json.load(file)
        except FileNotFoundError:
            return {}
        return entries if isinstance(entries, dict) else {}

    def _write(self, entries: dict[str, dict[str, str]]) -> None:
        temp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)  # whatever the file was, should it have been left behind
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(entries, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self._path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
