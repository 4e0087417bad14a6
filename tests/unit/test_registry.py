import ipaddress
import sqlite3
from pathlib import Path

import pytest

from faasd.errors import Conflict, InvalidRequest, NotFound
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.registry import SCHEMA, Registry, first_free_address, validate_name

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
    assert registry.list() == []
    assert registry.next_version("hello") == 1


def test_a_database_from_before_limits_is_migrated_and_keeps_its_functions(tmp_path: Path) -> None:
    path = tmp_path / "faasd.db"
    old_schema = SCHEMA.replace("    limits   TEXT NOT NULL DEFAULT '{}',\n", "")
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO functions VALUES ('old', '127.10.0.2', 1, 0)")
        db.execute("INSERT INTO versions VALUES ('old', 1, 'old', 'sha256:a', ?, 0, 0, 0)", (CONFIG.to_json(),))
    registry = Registry(path, RANGE)
    assert registry.get("old").current.limits == Limits()
    registry.add_version("old", 2, "old", "sha256:b", CONFIG, 0, 0, Limits(pids=7))
    assert registry.get("old").current.limits.pids == 7
    registry.close()
    assert Registry(path, RANGE).get("old").current.number == 2, "reopening does not migrate twice"
