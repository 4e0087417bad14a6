"""The daemon's command line: flags and FAASD_* variables reach the one Config."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from faasd import daemon
from faasd.config import Config, TcpAddress
from faasd.main import main


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Config]]:
    """The configs ``faasd`` would run with; the daemon itself is not started (nor is this
    process left with its umask)."""
    configs: list[Config] = []
    monkeypatch.setattr(daemon, "run", lambda config: configs.append(config) or 0)
    before = current_umask()
    yield configs
    os.umask(before)


def test_the_daemon_writes_with_a_umask_that_leaves_others_nothing_to_read(
    started: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    masks: list[int] = []
    monkeypatch.setattr(daemon, "run", lambda config: masks.append(current_umask()) or 0)
    assert CliRunner().invoke(main, []).exit_code == 0
    assert masks == [0o066]


def test_tcp_listener_is_off_by_default(started: list[Config]) -> None:
    assert CliRunner().invoke(main, []).exit_code == 0
    assert started[0].listen is None


def test_listen_comes_from_the_flag_or_faasd_listen(started: list[Config]) -> None:
    assert CliRunner().invoke(main, ["--listen", "127.0.0.1:8080"]).exit_code == 0
    assert CliRunner(env={"FAASD_LISTEN": "[::1]:9090"}).invoke(main, []).exit_code == 0
    assert [c.listen for c in started] == [
        TcpAddress(ipaddress.ip_address("127.0.0.1"), 8080),
        TcpAddress(ipaddress.ip_address("::1"), 9090),
    ]


def test_a_bad_listen_address_is_a_usage_error(started: list[Config]) -> None:
    result = CliRunner().invoke(main, ["--listen", "localhost:8080"])
    assert result.exit_code == 2 and "the host must be an IP address" in result.output
    assert started == []


def test_image_limits_default_to_the_config(started: list[Config]) -> None:
    assert CliRunner().invoke(main, []).exit_code == 0
    assert (started[0].max_image_bytes, started[0].max_image_entries) == (8 * 1024**3, 1_000_000)


@pytest.mark.parametrize(
    "value, size",
    [
        ("512M", 512 * 1024**2),
        ("8G", 8 * 1024**3),
        ("100k", 102400),
        ("1GiB", 1024**3),
        ("4096", 4096),
        ("2T", 2 << 40),
    ],
)
def test_max_image_size_takes_units(started: list[Config], value: str, size: int) -> None:
    result = CliRunner().invoke(main, ["--max-image-size", value, "--max-image-entries", "50"])
    assert result.exit_code == 0, result.output
    assert (started[0].max_image_bytes, started[0].max_image_entries) == (size, 50)


def test_image_limits_from_the_environment(started: list[Config]) -> None:
    env = {"FAASD_MAX_IMAGE_SIZE": "1G", "FAASD_MAX_IMAGE_ENTRIES": "7"}
    assert CliRunner().invoke(main, [], env=env).exit_code == 0
    assert (started[0].max_image_bytes, started[0].max_image_entries) == (1024**3, 7)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-image-size", "lots"], "'lots' is not a size: use a number with an optional k, m, g or t suffix"),
        (["--max-image-size", "0"], "at least 1 byte"),
        (["--max-image-size", "-5M"], "is not a size"),
        (["--max-image-entries", "0"], "0 is not in the range x>=1"),
    ],
)
def test_bad_image_limits_are_refused(started: list[Config], args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert started == []


def test_keep_versions_comes_from_the_flag_or_faasd_keep_versions(started: list[Config]) -> None:
    assert CliRunner().invoke(main, []).exit_code == 0
    assert CliRunner().invoke(main, ["--keep-versions", "5"]).exit_code == 0
    assert CliRunner(env={"FAASD_KEEP_VERSIONS": "1"}).invoke(main, []).exit_code == 0
    assert [c.keep_versions for c in started] == [3, 5, 1]
    result = CliRunner().invoke(main, ["--keep-versions", "0"])
    assert result.exit_code == 2 and "--keep-versions" in result.output
