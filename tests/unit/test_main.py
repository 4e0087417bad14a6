"""The daemon's command line: flags and FAASD_* variables reach the one Config."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from faasd import daemon, main
from faasd.config import Config


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The Configs ``faasd`` would run with; nothing is started."""
    seen: list[Config] = []

    def run(config: Config) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(daemon, "run", run)
    return seen


def test_image_limits_default_to_the_config(configs: list[Config]) -> None:
    assert CliRunner().invoke(main.main, []).exit_code == 0
    assert (configs[0].max_image_bytes, configs[0].max_image_entries) == (8 * 1024**3, 1_000_000)


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
def test_max_image_size_takes_units(configs: list[Config], value: str, size: int) -> None:
    result = CliRunner().invoke(main.main, ["--max-image-size", value, "--max-image-entries", "50"])
    assert result.exit_code == 0, result.output
    assert (configs[0].max_image_bytes, configs[0].max_image_entries) == (size, 50)


def test_image_limits_from_the_environment(configs: list[Config]) -> None:
    env = {"FAASD_MAX_IMAGE_SIZE": "1G", "FAASD_MAX_IMAGE_ENTRIES": "7"}
    assert CliRunner().invoke(main.main, [], env=env).exit_code == 0
    assert (configs[0].max_image_bytes, configs[0].max_image_entries) == (1024**3, 7)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-image-size", "lots"], "'lots' is not a size: use a number of bytes, or one like 512M or 8G"),
        (["--max-image-size", "0"], "at least 1 byte"),
        (["--max-image-size", "-5M"], "is not a size"),
        (["--max-image-entries", "0"], "0 is not in the range x>=1"),
    ],
)
def test_bad_image_limits_are_refused(configs: list[Config], args: list[str], message: str) -> None:
    result = CliRunner().invoke(main.main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert configs == []
