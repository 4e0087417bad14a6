"""``faas apply -f stack.yml``: make the daemon's functions what a stack file declares.

Each declared function is deployed as ``faas new`` would: pulled by the daemon (``image``) or
uploaded (``archive``, the layers faasd holds left out). The daemon adds a version only where
the image, the environment or the limits differ from the current version's, so applying the
same file twice changes nothing the second time. With ``--prune``, the functions the file does
not declare are removed. With ``--dry-run``, faas asks the daemon what would change and prints
the plan, changing nothing; an archive is not sent, so its line says only that it would be.

The whole file is checked before the first function is deployed (``faasd.stack``); the first
function that fails stops the rest, and says which it was.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from faas_cli.client import ApiError, Client
from faas_cli.pulling import docker_config_path, docker_credentials
from faas_cli.upload import tarball_upload
from faasd.images.reference import Reference
from faasd.stack import ArchiveSource, FunctionSpec, PullSource, StackError, load_stack


def apply_function(client: Client, spec: FunctionSpec, exists: bool, dry_run: bool) -> str:
    """Deploy ``spec`` (or, with ``dry_run``, say what deploying it would do): one line of outcome."""
    source = spec.source
    if isinstance(source, PullSource):
        credentials = docker_credentials(Reference.parse(source.reference).registry, docker_config_path())
        events = client.pull(spec.name, source.reference, spec.settings, spec.environment, credentials, dry_run)
        outcome = list(events)[-1]
        if dry_run:
            return _planned(exists, outcome["changed"], source.reference)
        return _done(exists, outcome["changed"], outcome["function"])
    if isinstance(source, ArchiveSource):
        if dry_run:
            return f"{'update' if exists else 'create'} from {source.path}, if its image or settings differ"
        try:
            file = open(source.path, "rb")
        except OSError as exc:
            raise click.ClickException(f"{spec.name}: cannot read {source.path}: {exc.strerror}") from None
        with file:
            upload = tarball_upload(file, client)
            function = client.deploy(
                spec.name, upload.blocks, tag=source.tag, limits=spec.settings, environment=spec.environment
            )
        return _done(exists, "same_as" not in function, function)
    raise AssertionError(f"no way to deploy a {type(source).__name__}")


def _planned(exists: bool, changed: bool, reference: str) -> str:
    if not changed:
        return "unchanged"
    return f"{'update' if exists else 'create'} from {reference}"


def _done(exists: bool, changed: bool, function: dict[str, object]) -> str:
    if not changed:
        return f"unchanged (version {function['version']})"
    return f"{'updated' if exists else 'created'} (version {function['version']}, {function['ip']})"


def plan_and_apply(client: Client, stack_file: Path, prune: bool, dry_run: bool) -> Iterator[tuple[str, str]]:
    """Each function's name and outcome, as it is applied."""
    try:
        stack = load_stack(stack_file, os.environ)
    except StackError as exc:
        raise click.ClickException(exc.message) from None
    deployed = {function["name"] for function in client.functions()}
    for name, spec in stack.functions.items():
        try:
            yield name, apply_function(client, spec, name in deployed, dry_run)
        except ApiError as exc:
            raise ApiError(exc.status, f"{name}: {exc}") from None
    if prune:
        for name in sorted(deployed - set(stack.functions)):
            if not dry_run:
                client.remove(name)
            yield name, "remove" if dry_run else "removed"


@click.command()
@click.option(
    "-f",
    "--file",
    "stack_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("stack.yml"),
    show_default=True,
    help="The stack file declaring the functions.",
)
@click.option("--prune", is_flag=True, help="Also remove the functions the file does not declare.")
@click.option("--dry-run", is_flag=True, help="Print what would change, and change nothing.")
@click.pass_obj
def apply(client: Client, stack_file: Path, prune: bool, dry_run: bool) -> None:
    """Make faasd's functions those STACK_FILE declares: add, update, and with --prune remove.

    Only what differs changes: applying the same file again adds no version. The file follows
    OpenFaaS's stack.yml (provider, functions: NAME: image, environment, limits); see
    docs/scale.md for the keys and the differences.

    \b
    Example:
      faas apply -f stack.yml --dry-run
      faas apply -f stack.yml --prune
    """
    for name, outcome in plan_and_apply(client, stack_file, prune, dry_run):
        click.echo(f"{name}: {outcome}")
        sys.stdout.flush()
