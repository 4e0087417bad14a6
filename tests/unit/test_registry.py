import contextlib
import ipaddress
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from faasd.errors import Conflict, InvalidRequest, NotFound
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.registry import Registry, first_free_address, validate_name

CONFIG = ImageConfig(entrypoint=(), cmd=("/bin/hello",), env=(), working_dir="", user="")
RANGE = ipaddress.IPv4Network("127.10.0.0/29")
LIMITS = Limits()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "faasd.db", RANGE)
    yield registry
    registry.close()


@pytest.mark.parametrize("name", ["a", "hello", "hello-2", "0x", "a" * 63])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "A", "a_b", "a.b", "a" * 64, "../x", "a b", "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid function name"):
        validate_name(name)


def test_addresses_skip_the_first_host_and_reuse_freed_ones() -> None:
    used = {ipaddress.IPv4Address("127.10.0.2")}
    assert first_free_address(RANGE, set()) == ipaddress.IPv4Address("127.10.0.2")
    assert first_free_address(RANGE, used) == ipaddress.IPv4Address("127.10.0.3")
    full = set(list(RANGE.hosts())[1:])
    with pytest.raises(Conflict, match="no free address"):
        first_free_address(RANGE, full)


def test_new_version_keeps_the_address(registry: Registry) -> None:
    first = registry.add_version("hello", 1, "hello:1", "sha256:a", CONFIG, 0, 0, LIMITS)
    assert str(first.ip) == "127.10.0.2" and first.current.number == 1
    assert registry.next_version("hello") == 2
    second = registry.add_version("hello", 2, "hello:2", "sha256:b", CONFIG, 0, 0, LIMITS)
    assert second.ip == first.ip and second.current.number == 2 and second.current.digest == "sha256:b"
    assert [v.number for v in registry.versions("hello")] == [1, 2]
    other = registry.add_version("other", 1, "other", "sha256:c", CONFIG, 0, 0, LIMITS)
    assert str(other.ip) == "127.10.0.3"


def test_state_survives_reopening(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "faasd.db", RANGE)
    limits = Limits(memory_bytes=64 << 20, cpus=0.5, pids=16, timeout_seconds=2.5, tmp_bytes=0)
    registry.add_version("hello", 1, "hello", "sha256:a", CONFIG, 5, 6, limits)
    registry.close()
    reopened = Registry(tmp_path / "faasd.db", RANGE)
    function = reopened.get("hello")
    assert (function.current.config, function.current.uid, function.current.gid) == (CONFIG, 5, 6)
    assert function.current.limits == limits
    reopened.close()


def test_remove_and_forget(registry: Registry) -> None:
    for number in (1, 2, 3):
        registry.add_version("hello", number, "hello", "sha256:x", CONFIG, 0, 0, LIMITS)
    registry.forget_versions("hello", [1, 3])
    assert [v.number for v in registry.versions("hello")] == [2, 3], "the current version is never forgotten"
    registry.remove("hello")
    with pytest.raises(NotFound, match="no function named 'hello'"):
        registry.get("hello")
    assert registry.functions() == []
    assert registry.next_version("hello") == 1


# The schemas older faasd releases wrote, as they wrote them (and the user_version they set).
SCHEMA_BEFORE_LIMITS = """
CREATE TABLE functions (name TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE, current_version INTEGER NOT NULL,
                        created REAL NOT NULL);
CREATE TABLE versions (function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
                       version INTEGER NOT NULL, image TEXT NOT NULL, digest TEXT NOT NULL, config TEXT NOT NULL,
                       uid INTEGER NOT NULL, gid INTEGER NOT NULL, created REAL NOT NULL,
                       PRIMARY KEY (function, version));
"""
SCHEMA_BEFORE_ADDRESSES = (
    SCHEMA_BEFORE_LIMITS.replace(
        "created REAL NOT NULL,\n", "created REAL NOT NULL, limits TEXT NOT NULL DEFAULT '{}',\n"
    )
    + "PRAGMA user_version = 1;"
)


@pytest.mark.parametrize("old_schema", [SCHEMA_BEFORE_LIMITS, SCHEMA_BEFORE_ADDRESSES], ids=["v0", "v1"])
def test_an_older_database_is_migrated_and_keeps_its_functions(tmp_path: Path, old_schema: str) -> None:
    path = tmp_path / "faasd.db"
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO functions VALUES ('old', '127.10.0.2', 2, 0)")
        for number in (1, 2):
            db.execute(
                "INSERT INTO versions (function, version, image, digest, config, uid, gid, created)"
                " VALUES ('old', ?, 'old', 'sha256:a', ?, 0, 0, 0)",
                (number, CONFIG.to_json()),
            )
    db.close()
    registry = Registry(path, RANGE)
    assert registry.get("old").current.limits == Limits()
    assert [v.ip for v in registry.versions("old")] == [None, None]
    version, fresh = registry.assign_address("old", 1)
    assert fresh and str(version.ip) == "127.10.0.3", "the function's own address is not handed out again"
    assert registry.set_current("old", 1).current.number == 1
    registry.add_version("old", 3, "old", "sha256:b", CONFIG, 0, 0, Limits(pids=7))
    assert registry.get("old").current.limits.pids == 7
    registry.close()
    reopened = Registry(path, RANGE)
    assert reopened.get("old").current.number == 3, "reopening does not migrate twice"
    assert str(reopened.version("old", 1).ip) == "127.10.0.3"
    reopened.close()


def test_a_new_database_has_the_migrated_schema(tmp_path: Path) -> None:
    """A database created today and one migrated from the oldest schema have the same tables."""

    def columns(path: Path) -> dict[str, list[tuple]]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            shape = {t: [r[1:] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
            shape["indexes"] = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))
            shape["user_version"] = db.execute("PRAGMA user_version").fetchall()
            return shape

    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as db:
        db.executescript(SCHEMA_BEFORE_LIMITS)
    Registry(tmp_path / "old.db", RANGE).close()
    Registry(tmp_path / "new.db", RANGE).close()
    assert columns(tmp_path / "old.db") == columns(tmp_path / "new.db")


def test_rollback_makes_a_kept_version_current_and_numbering_continues(registry: Registry) -> None:
    for number in (1, 2, 3):
        registry.add_version("hello", number, f"hello:{number}", f"sha256:{number}", CONFIG, 0, 0, LIMITS)
    function = registry.set_current("hello", 1)
    assert function.current.number == 1 and function.current.image == "hello:1"
    assert registry.get("hello").current.number == 1
    assert registry.next_version("hello") == 4, "numbering goes on after the highest number"
    with pytest.raises(NotFound, match="'hello' has no version 7: the versions kept are 1, 2, 3"):
        registry.set_current("hello", 7)
    with pytest.raises(NotFound, match="no function named 'nope'"):
        registry.set_current("nope", 1)
    assert registry.get("hello").current.number == 1, "a refused rollback changes nothing"


def test_a_version_address_is_stable_unique_and_released(registry: Registry) -> None:
    registry.add_version("hello", 1, "hello", "sha256:a", CONFIG, 0, 0, LIMITS)
    registry.add_version("hello", 2, "hello", "sha256:b", CONFIG, 0, 0, LIMITS)
    first, fresh = registry.assign_address("hello", 1)
    again, fresh_again = registry.assign_address("hello", 1)
    assert fresh and not fresh_again and first == again and str(first.ip) == "127.10.0.3"
    other = registry.add_version("other", 1, "other", "sha256:c", CONFIG, 0, 0, LIMITS)
    assert str(other.ip) == "127.10.0.4", "a function never gets an address a version holds"
    assert registry.addresses() == {ipaddress.IPv4Address(a) for a in ("127.10.0.2", "127.10.0.3", "127.10.0.4")}
    assert [v.number for v in registry.forget_versions("hello", [1])] == [1]
    assert registry.addresses() == {ipaddress.IPv4Address(a) for a in ("127.10.0.2", "127.10.0.4")}
    second, _ = registry.assign_address("hello", 2)
    assert str(second.ip) == "127.10.0.3", "a pruned version's address is free again"
    registry.release_address("hello", 2)
    assert registry.version("hello", 2).ip is None
    with pytest.raises(NotFound, match="'hello' has no version 1"):
        registry.assign_address("hello", 1)


def test_addresses_run_out_with_a_clear_error(registry: Registry) -> None:
    for number in range(1, 7):
        registry.add_version("hello", number, "hello", "sha256:a", CONFIG, 0, 0, LIMITS)
    for number in range(1, 5):  # the function has .2; its versions take .3 to .6, the last of the /29
        registry.assign_address("hello", number)
    with pytest.raises(Conflict, match="no free address left in 127.10.0.0/29"):
        registry.assign_address("hello", 5)
    assert registry.version("hello", 5).ip is None


def test_reads_never_wait_for_a_write_held_up_in_the_database(tmp_path: Path) -> None:
    """A write waits for the database (here another connection's lock; in life, an fsync) while
    the event loop reads: the reads answer at once, from what was last committed."""
    registry = Registry(tmp_path / "faasd.db", RANGE)
    registry.add_version("hello", 1, "hello:1", "sha256:a", CONFIG, 0, 0, LIMITS)
    blocker = sqlite3.connect(tmp_path / "faasd.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    writing = threading.Thread(
        target=registry.add_version, args=("hello", 2, "hello:2", "sha256:b", CONFIG, 0, 0, LIMITS)
    )
    writing.start()
    time.sleep(0.2)  # the write holds the registry and waits for the database
    read: list[object] = []

    def reads() -> None:
        read.extend([registry.get("hello").current.number, registry.next_version("hello"), len(registry.functions())])
        read.extend([len(registry.versions("hello")), registry.version("hello", 1).number, len(registry.addresses())])

    reader = threading.Thread(target=reads)
    reader.start()
    reader.join(2)
    assert writing.is_alive() and not reader.is_alive(), "the reads waited for the write"
    assert read == [1, 2, 1, 1, 1, 1]
    blocker.execute("ROLLBACK")
    writing.join(10)
    assert registry.get("hello").current.number == 2 and registry.next_version("hello") == 3
    blocker.close()
    registry.close()


def test_a_database_an_older_faasd_left_readable_is_made_roots_alone(tmp_path: Path) -> None:
    path = tmp_path / "faasd.db"
    Registry(path, RANGE).close()
    wal = path.with_name("faasd.db-wal")
    wal.touch()
    for file in (path, wal):
        file.chmod(0o644)
    registry = Registry(path, RANGE)
    try:
        registry.add_version("hello", 1, "hello:1", "sha256:a", CONFIG, 0, 0, LIMITS)
        modes = {file.name: file.stat().st_mode & 0o777 for file in tmp_path.iterdir()}
    finally:
        registry.close()
    assert modes and set(modes.values()) == {0o600}, modes
