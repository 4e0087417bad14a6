"""The reference docs say what the code does: routes, deploy parameters, the version JSON, the
outcomes in a function's log, and every command and option of ``faas``.

Each test compares a doc with the thing itself and, when they differ, names what to add or
remove where, so that whoever adds a route, an outcome or an option knows which doc to write.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from pathlib import Path

import click
import pytest

from faas_cli.main import main as faas
from faasd.api import make_app
from faasd.api.functions import DEPLOY_PARAMS, version_json
from faasd.config import Config
from faasd.images.archive import ImageConfig
from faasd.instance import Outcome
from faasd.limits import Limits
from faasd.registry import Version

DOCS = Path(__file__).parents[2] / "docs"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def missing_and_extra(where: str, documented: set[str], actual: set[str], what: str) -> str:
    """A failure message naming what the doc lacks and what it has that no longer exists."""
    lines = []
    if lacking := sorted(actual - documented):
        lines.append(f"{where} does not document these {what}: {', '.join(lacking)}")
    if extra := sorted(documented - actual):
        lines.append(f"{where} documents these {what}, which do not exist: {', '.join(extra)}")
    return "\n".join(lines)


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a markdown heading line), up to the next heading of its level or above."""
    level = heading.split(" ", 1)[0]
    if f"\n{heading}\n" not in text:
        pytest.fail(f"the doc has no heading {heading!r}: the table this test reads goes under it")
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = re.search(rf"^#{{1,{len(level)}}} ", text[start:], re.MULTILINE)
    return text[start : start + end.start()] if end else text[start:]


# docs/api.md


def api_routes_documented() -> dict[str, str]:
    """``METHOD /path`` -> its row's input cell, from the route table of docs/api.md."""
    rows = re.findall(rf"^\| `((?:{'|'.join(METHODS)}) /[^`]*)` \| ([^|]*) \|", (DOCS / "api.md").read_text(), re.M)
    return dict(rows)


def api_routes_served(tmp_path: Path) -> set[str]:
    """``METHOD /path`` for every route the API app serves (HEAD, which aiohttp adds to GET, aside)."""
    config = Config(state_dir=tmp_path, run_dir=tmp_path, ip_range=ipaddress.IPv4Network("127.0.0.0/29"))
    app = make_app(config, None, None, None)  # type: ignore[arg-type]  # only the router is read
    return {
        f"{route.method} {resource.canonical}"
        for resource in app.router.resources()
        for route in resource
        if route.method != "HEAD"
    }


def test_every_route_is_in_the_api_doc(tmp_path: Path) -> None:
    documented, served = set(api_routes_documented()), api_routes_served(tmp_path)
    assert documented == served, missing_and_extra("docs/api.md's route table", documented, served, "routes")


def test_every_deploy_parameter_is_in_the_api_doc() -> None:
    cell = api_routes_documented()["POST /v1/functions/{name}"]
    documented = set(re.findall(r"`([a-z_]+)`", cell))
    assert documented == DEPLOY_PARAMS, missing_and_extra(
        "the POST /v1/functions/{name} row of docs/api.md", documented, set(DEPLOY_PARAMS), "query parameters"
    )


def test_the_version_example_has_every_field_and_limit() -> None:
    block = re.search(r"```json\n(.*?)```", section((DOCS / "api.md").read_text(), "## Versions"), re.S)
    assert block, "docs/api.md's Versions section starts with a JSON example of a version"
    example = json.loads(block.group(1).replace('"sha256:..."', '"sha256:0"'))
    version = Version("hello", 2, "hello:2", "sha256:0", ImageConfig((), (), (), "", ""), 0, 0, 0.0, Limits())
    actual = version_json(version, current=1)
    where = "the version example in docs/api.md"
    assert set(example) == set(actual), missing_and_extra(where, set(example), set(actual), "fields")
    limits = {field.name for field in dataclasses.fields(Limits)}
    assert set(example["limits"]) == limits, missing_and_extra(where, set(example["limits"]), limits, "limits")


# docs/logs.md


def test_every_outcome_is_in_the_logs_doc() -> None:
    table = section((DOCS / "logs.md").read_text(), "### Outcomes")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    actual = {outcome.value for outcome in Outcome}
    assert documented == actual, missing_and_extra("docs/logs.md's Outcomes table", documented, actual, "outcomes")


# docs/cli.md


def flags(param: click.Parameter) -> list[str]:
    return [*param.opts, *param.secondary_opts]


def mentions(text: str, flag: str) -> bool:
    """``flag`` appears in ``text`` as itself, not as part of a longer flag."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def passages(text: str, command: str) -> str:
    """What docs/cli.md says about ``faas COMMAND``: the paragraphs and table rows that name it,
    and the sections whose heading names it."""
    name = re.compile(rf"faas {command}(?![\w-])")
    blocks = [block for block in re.split(r"\n\s*\n|\n(?=\|)", text) if name.search(block)]
    headed = [section(text, heading) for heading in re.findall(r"^#+ .*$", text, re.M) if name.search(heading)]
    return "\n".join(blocks + headed)


def test_every_command_is_in_the_cli_doc() -> None:
    table = section((DOCS / "cli.md").read_text(), "## Commands")
    documented = set(re.findall(r"^\| `faas ([a-z-]+)", table, re.M))
    actual = set(faas.commands)  # type: ignore[attr-defined]
    assert documented == actual, missing_and_extra("docs/cli.md's Commands table", documented, actual, "commands")


def test_every_option_is_in_the_cli_doc() -> None:
    text = (DOCS / "cli.md").read_text()
    lacking = []
    for param in faas.params:
        if isinstance(param, click.Option) and param.name not in ("help",):
            if not any(mentions(text, flag) for flag in flags(param)):
                lacking.append(f"faas {max(param.opts, key=len)}")
    for name, command in faas.commands.items():  # type: ignore[attr-defined]
        about = passages(text, name)
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                if not any(mentions(about, flag) for flag in flags(param)):
                    lacking.append(f"faas {name} {max(param.opts, key=len)}")
    assert not lacking, (
        "docs/cli.md does not document these options: "
        + ", ".join(lacking)
        + " (name each in the command's row of the Commands table, or in a paragraph or section that names"
        " `faas COMMAND`)"
    )


# faas new --help


@pytest.mark.parametrize(
    ("option", "shipped"),
    [
        ("--memory", "256m"),
        ("--cpus", "1"),
        ("--pids", "128"),
        ("--timeout", "30"),
        ("--tmp-size", "64m"),
        ("--warm", "4"),
        ("--reuse", "1"),
    ],
)
def test_faas_new_help_gives_the_daemons_defaults_as_the_daemons(option: str, shipped: str) -> None:
    """A limit left out is the daemon's to choose: the help must not present it as fixed."""
    new = faas.commands["new"]  # type: ignore[attr-defined]
    (param,) = [p for p in new.params if option in p.opts]
    assert "the daemon's" in param.help and f"{shipped} as shipped" in param.help, param.help
    defaults = Limits()
    shipped_values = {
        "--memory": f"{defaults.memory_bytes >> 20}m",
        "--cpus": f"{defaults.cpus:g}",
        "--pids": str(defaults.pids),
        "--timeout": f"{defaults.timeout_seconds:g}",
        "--tmp-size": f"{defaults.tmp_bytes >> 20}m",
        "--warm": str(defaults.warm),
        "--reuse": str(defaults.reuse),
    }
    assert shipped_values[option] == shipped, "faasd's shipped default changed: the help follows it, so must this"


# README.md


def test_the_quick_start_shows_an_image_function_then_one_from_source() -> None:
    quick_start = section((DOCS.parent / "README.md").read_text(), "## Quick start")
    image, source = quick_start.find("curl http://$(faas ip hello)/"), quick_start.find("faas new add --runtime python")
    assert 0 <= image < source, "the Quick start deploys from an image first, then from source"
