"""docs/settings.md lists every flag of faasd and faas, with the variable that sets it."""

import re
from pathlib import Path

import click
import pytest

from faas_cli.main import main as faas
from faasd.main import main as faasd

SETTINGS = Path(__file__).parents[2] / "docs" / "settings.md"


def documented(prefix: str) -> dict[str, str]:
    """flag -> environment variable, from the doc's table rows whose variable starts with ``prefix``."""
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `([A-Z_]+)` \|", SETTINGS.read_text(), re.MULTILINE)
    return {flag: env for flag, env in rows if env.startswith(prefix)}


def options(command: click.Command, prefix: str) -> dict[str, str]:
    """flag -> the environment variable click reads it from."""
    found = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            flag = max(param.opts, key=len)
            found[flag] = param.envvar or f"{prefix}{flag[2:].replace('-', '_').upper()}"
    return found


@pytest.mark.parametrize(("command", "prefix"), [(faasd, "FAASD_"), (faas, "FAAS_")])
def test_every_flag_is_documented_and_nothing_else(command: click.Command, prefix: str) -> None:
    assert documented(prefix) == options(command, prefix)
