"""Functions and their versions: the single source of truth, in SQLite.

Every change is one transaction, committed with ``synchronous=FULL`` so that a deploy the
API acknowledged survives a crash. The daemon's in-memory listeners are rebuilt from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import Conflict, InvalidRequest, NotFound
from faasd.images.archive import ImageConfig
from faasd.limits import Limits

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name            TEXT PRIMARY KEY,
    ip              TEXT NOT NULL UNIQUE,
    current_version INTEGER NOT NULL,
    created         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version  INTEGER NOT NULL,
    image    TEXT NOT NULL,
    digest   TEXT NOT NULL,
    config   TEXT NOT NULL,
    uid      INTEGER NOT NULL,
    gid      INTEGER NOT NULL,
    created  REAL NOT NULL,
    limits   TEXT NOT NULL DEFAULT '{}',
    ip       TEXT,
    pulled   TEXT,
    PRIMARY KEY (function, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_ip ON versions(ip);
"""
# Changes to a database made by an older faasd, by the schema version they lead to.
MIGRATIONS = {
    1: "ALTER TABLE versions ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'",
    # A version's own address, given on first ask (``faas ip NAME --version V``); NULL until then.
    2: "ALTER TABLE versions ADD COLUMN ip TEXT",
    3: "CREATE UNIQUE INDEX IF NOT EXISTS versions_ip ON versions(ip)",
    # The manifest digest a pulled version's reference resolved to; NULL for an upload.
    4: "ALTER TABLE versions ADD COLUMN pulled TEXT",
}


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid function name, else raise ``InvalidRequest``."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"invalid function name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Version:
    """One imported image of a function; its rootfs never changes once registered."""

    function: str
    number: int
    image: str
    digest: str
    config: ImageConfig
    uid: int
    gid: int
    created: float
    limits: Limits
    ip: ipaddress.IPv4Address | None = None  # its own address, serving only this version, once asked for
    pulled: str | None = None  # pulled from a registry: the manifest digest ``image`` resolved to


@dataclass(frozen=True)
class Function:
    """A deployed function: its stable address and the version new connections get."""

    name: str
    ip: ipaddress.IPv4Address
    current: Version
    created: float


def first_free_address(ip_range: ipaddress.IPv4Network, used: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    """The lowest host address of ``ip_range`` not in ``used``.

    The range's first host address is never handed out: it stays free for the daemon itself.
    """
    hosts = ip_range.hosts()
    next(hosts, None)
    for address in hosts:
        if address not in used:
            return address
    raise Conflict(f"no free address left in {ip_range}: remove a function or widen --ip-range")


@dataclass(frozen=True)
class Snapshot:
    """Every function and version as of the last commit, for readers that must not wait."""

    functions: dict[str, Function]  # by name, in name order
    versions: dict[str, tuple[Version, ...]]  # by function name, oldest first

    @classmethod
    def read(cls, db: sqlite3.Connection) -> Snapshot:
        versions: dict[str, list[Version]] = {}
        for row in db.execute("SELECT * FROM versions ORDER BY function, version"):
            versions.setdefault(row["function"], []).append(_version(row))
        functions = {}
        for row in db.execute("SELECT name, ip, current_version, created FROM functions ORDER BY name"):
            kept = {version.number: version for version in versions.get(row["name"], ())}
            if row["current_version"] in kept:
                current = kept[row["current_version"]]
                functions[row["name"]] = Function(
                    row["name"], ipaddress.IPv4Address(row["ip"]), current, row["created"]
                )
        return cls(functions, {name: tuple(kept) for name, kept in versions.items()})


class Registry:
    """The functions table and the versions table, written by one thread at a time.

    Writes commit with an fsync, in a thread. Reads never touch the database: they come from a
    ``Snapshot`` replaced whole after each commit, so a reader on the event loop never waits for
    a writer's lock or its fsync.
    """

    def __init__(self, path: Path, ip_range: ipaddress.IPv4Network) -> None:
        self._ip_range = ip_range
        self._lock = threading.Lock()
        _keep_private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._snapshot = Snapshot.read(self._db)

    def _migrate(self) -> None:
        """Create the tables, or bring an older faasd's tables up to date.

        One transaction (SQLite's DDL is transactional): a migration cut short leaves the
        database as the older faasd had it, to be migrated again on the next start.
        """
        latest = max(MIGRATIONS)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (current,) = self._db.execute("PRAGMA user_version").fetchone()
            exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'versions'").fetchone()
            if exists:
                statements = [MIGRATIONS[number] for number in range(current + 1, latest + 1)]
            else:
                statements = [statement for statement in SCHEMA.split(";") if statement.strip()]
            for statement in statements:
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {latest}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def add_version(
        self,
        name: str,
        number: int,
        image: str,
        digest: str,
        config: ImageConfig,
        uid: int,
        gid: int,
        limits: Limits,
        pulled: str | None = None,
    ) -> Function:
        """Register version ``number`` of ``name`` and make it current, creating the function
        (with a fresh address from the range) if it did not exist."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT ip, created FROM functions WHERE name = ?", (name,)).fetchone()
                if row is None:
                    ip = first_free_address(self._ip_range, self.addresses())
                    self._db.execute(
                        "INSERT INTO functions (name, ip, current_version, created) VALUES (?, ?, ?, ?)",
                        (name, str(ip), number, now),
                    )
                else:
                    self._db.execute("UPDATE functions SET current_version = ? WHERE name = ?", (number, name))
                self._db.execute(
                    "INSERT INTO versions (function, version, image, digest, config, uid, gid, created, limits, pulled)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, number, image, digest, config.to_json(), uid, gid, now, limits.to_json(), pulled),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._refresh_locked()
            return self.get(name)

    def next_version(self, name: str) -> int:
        """The number the next version of ``name`` will get (for naming its rootfs)."""
        return max((version.number for version in self._snapshot.versions.get(name, ())), default=0) + 1

    def get(self, name: str) -> Function:
        function = self._snapshot.functions.get(name)
        if function is None:
            raise NotFound(f"no function named {name!r}")
        return function

    def functions(self) -> list[Function]:
        """Every registered function, by name."""
        return list(self._snapshot.functions.values())

    def versions(self, name: str) -> list[Version]:
        """Every registered version of ``name``, oldest first."""
        snapshot = self._snapshot
        if name not in snapshot.functions:
            raise NotFound(f"no function named {name!r}")
        return list(snapshot.versions.get(name, ()))

    def version(self, name: str, number: int) -> Version:
        """Version ``number`` of ``name``, if it is still kept."""
        versions = self.versions(name)  # an unknown function is reported as such
        for version in versions:
            if version.number == number:
                return version
        kept = ", ".join(str(version.number) for version in versions)
        raise NotFound(f"{name!r} has no version {number}: the versions kept are {kept} (faas versions {name})")

    def set_current(self, name: str, number: int) -> Function:
        """Make the kept version ``number`` the one new connections to ``name`` get."""
        with self._lock:
            self.version(name, number)
            self._db.execute("UPDATE functions SET current_version = ? WHERE name = ?", (number, name))
            self._refresh_locked()
            return self.get(name)

    def assign_address(self, name: str, number: int) -> tuple[Version, bool]:
        """Version ``number`` of ``name`` with its own address, given from the range on the first
        call and the same one afterwards; the flag says whether this call gave it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self.version(name, number)
                fresh = version.ip is None
                if fresh:
                    ip = first_free_address(self._ip_range, self.addresses())
                    self._db.execute(
                        "UPDATE versions SET ip = ? WHERE function = ? AND version = ?", (str(ip), name, number)
                    )
                    version = dataclasses.replace(version, ip=ip)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._refresh_locked()
            return version, fresh

    def release_address(self, name: str, number: int) -> None:
        """Give version ``number``'s own address back to the range."""
        with self._lock:
            self._db.execute("UPDATE versions SET ip = NULL WHERE function = ? AND version = ?", (name, number))
            self._refresh_locked()

    def addresses(self) -> set[ipaddress.IPv4Address]:
        """Every address in use: each function's, and the versions' own."""
        snapshot = self._snapshot
        return {function.ip for function in snapshot.functions.values()} | {
            version.ip for versions in snapshot.versions.values() for version in versions if version.ip is not None
        }

    def forget_versions(self, name: str, numbers: list[int]) -> list[Version]:
        """Drop old versions of ``name`` (their own addresses go back to the range); the current
        one is never dropped. Returns the versions dropped."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"DELETE FROM versions WHERE function = ? AND version IN ({','.join('?' * len(numbers))}) "
                    "AND version != (SELECT current_version FROM functions WHERE name = ?) RETURNING *",
                    (name, *numbers, name),
                ).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._refresh_locked()
            return sorted((_version(r) for r in rows), key=lambda v: v.number)

    def remove(self, name: str) -> Function:
        """Delete ``name`` and all its versions; returns what was removed."""
        with self._lock:
            function = self.get(name)
            self._db.execute("DELETE FROM functions WHERE name = ?", (name,))
            self._refresh_locked()
            return function

    def _refresh_locked(self) -> None:
        """Read every row again after a commit; readers see the new snapshot whole, or the old one."""
        self._snapshot = Snapshot.read(self._db)


def _keep_private(path: Path) -> None:
    """Make a database an older faasd left readable root's alone, before it is opened.

    Its ``Env`` columns hold secrets. SQLite creates the WAL and shared-memory files with the
    database's own mode, so those of them that exist already are the only others to fix.
    """
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            file.chmod(0o600)


def _version(row: sqlite3.Row) -> Version:
    return Version(
        function=row["function"],
        number=row["version"],
        image=row["image"],
        digest=row["digest"],
        config=ImageConfig.from_json(row["config"]),
        uid=row["uid"],
        gid=row["gid"],
        created=row["created"],
        limits=Limits.from_json(row["limits"]),
        ip=None if row["ip"] is None else ipaddress.IPv4Address(row["ip"]),
        pulled=row["pulled"],
    )
