import os
import stat
from pathlib import Path

import pytest

from faasd.auth import (
    TOKEN_PATTERN,
    TokenFileError,
    bearer_token,
    exposure_warning,
    load_or_create_token,
    token_matches,
)
from faasd.config import TcpAddress


def test_first_start_makes_a_random_token_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    token = load_or_create_token(path)
    status = path.stat()
    assert stat.S_IMODE(status.st_mode) == 0o600 and status.st_uid == os.geteuid()
    assert TOKEN_PATTERN.fullmatch(token) and len(token) >= 43
    assert path.read_text() == token + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["api.token"], "no temp file is left behind"


def test_later_starts_reuse_the_token(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    assert load_or_create_token(path) == load_or_create_token(path)
    assert load_or_create_token(tmp_path / "other.token") != load_or_create_token(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_token_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "api.token"
    load_or_create_token(path)
    path.chmod(mode)
    with pytest.raises(TokenFileError, match=f"mode {mode:04o}.*delete the file"):
        load_or_create_token(path)


@pytest.mark.parametrize("content", ["", "\n", "short", "has space in it but is long enough to pass length", "é" * 40])
def test_a_token_file_without_a_usable_token_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "api.token"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(TokenFileError, match="does not hold a usable token: delete it"):
        load_or_create_token(path)


def test_an_unreadable_token_path_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "api.token").mkdir(mode=0o700)
    with pytest.raises(TokenFileError, match="cannot read the token"):
        load_or_create_token(tmp_path / "api.token")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
        ("abc", None),
        ("", None),
    ],
)
def test_bearer_token_takes_the_token_of_the_bearer_scheme_only(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_matches_only_the_exact_token() -> None:
    assert token_matches("s3cret-token", "s3cret-token")
    for guess in ["s3cret-toke", "s3cret-token2", "S3cret-token", "", "s3cret-tokén", "\udcff"]:
        assert not token_matches("s3cret-token", guess), guess


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.93.0.1:1", "[::1]:8080"])
def test_loopback_listeners_need_no_warning(listen: str) -> None:
    assert exposure_warning(TcpAddress.parse(listen)) is None


# Parsed only, never bound: the warning is about addresses reachable from other hosts.
@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080"])
def test_listeners_beyond_loopback_are_told_to_use_tls(listen: str) -> None:
    warning = exposure_warning(TcpAddress.parse(listen))
    assert warning is not None and "not a loopback address" in warning and "TLS" in warning
