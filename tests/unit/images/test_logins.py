"""Registry logins kept in a root-only file, and credentials as a client sends them."""

from pathlib import Path

import pytest

from faasd.errors import InvalidRequest
from faasd.images.logins import Credentials, Logins


def test_logins_are_kept_in_a_private_file(tmp_path: Path) -> None:
    logins = Logins(tmp_path / "logins.json")
    assert logins.get("127.0.0.1:5000") is None
    logins.put("127.0.0.1:5000", Credentials("alice", "s3cret"))
    logins.put("127.0.0.1:5001", Credentials("bob", "other"))
    assert (tmp_path / "logins.json").stat().st_mode & 0o777 == 0o600
    assert logins.get("127.0.0.1:5000") == Credentials("alice", "s3cret")
    assert logins.registries() == ["127.0.0.1:5000", "127.0.0.1:5001"]
    assert logins.remove("127.0.0.1:5000") and not logins.remove("127.0.0.1:5000")
    assert logins.registries() == ["127.0.0.1:5001"]
    assert [path.name for path in tmp_path.iterdir()] == ["logins.json"]


def test_a_password_never_shows_in_a_repr() -> None:
    assert "s3cret" not in repr(Credentials("alice", "s3cret"))


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"username": "alice"},
        {"username": "alice", "password": "x", "extra": 1},
        {"username": "", "password": "x"},
        {"username": "al:ice", "password": "x"},
        {"username": "alice", "password": "line\nbreak"},
        {"username": "alice", "password": 5},
    ],
)
def test_malformed_credentials_are_refused(value: object) -> None:
    with pytest.raises(InvalidRequest):
        Credentials.from_json(value, "credentials")
