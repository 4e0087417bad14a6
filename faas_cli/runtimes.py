"""``faas runtime add|list|rm``: the images source functions run on."""

from __future__ import annotations

import io
import json

import click

from faas_cli.client import Client
from faas_cli.upload import tarball_upload
from faas_cli.versions import format_time, short_digest, table


@click.group()
def runtime() -> None:
    """Runtimes: images with an interpreter, on which functions deploy from source.

    \b
    Example:
      faas runtime add python -f python-runtime.tar
      faas new add --runtime python --code handler.py
      faas runtime add node -f node-runtime.tar
      faas new add-js --runtime node --code index.js
    """


@runtime.command()
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "tarball",
    type=click.File("rb"),
    required=True,
    metavar="FILE",
    help="The image tarball (docker save, podman save, OCI); - is standard input.",
)
@click.option("-t", "--tag", default=None, metavar="IMAGE", help="The image to take from an archive of several.")
@click.option(
    "--language",
    type=click.Choice(["node", "python"]),
    default=None,
    help="The language of its interpreter.  [default: NAME, when NAME is one]",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def add(
    client: Client, name: str, tarball: io.BufferedReader, tag: str | None, language: str | None, as_json: bool
) -> None:
    """Add the image in FILE as runtime NAME; faasd adds its wrapper for the language as a layer.

    The image needs the interpreter (python3, or node 18 or newer) on its PATH: a plain Debian
    image with it, or python:3.12-slim or node:20-slim from docker save. Its layers are stored
    once, shared by every function on it.
    """
    upload = tarball_upload(tarball, client)
    added = client.add_runtime(name, upload.blocks, language=language, tag=tag)
    if as_json:
        click.echo(json.dumps(added, indent=2))
    else:
        click.echo(f"Added runtime {added['name']} ({added['language']}, {added['layers']} layers)")


@runtime.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_(client: Client, as_json: bool) -> None:
    """List the runtimes."""
    runtimes = client.runtimes()
    if as_json:
        click.echo(json.dumps(runtimes, indent=2))
        return
    rows = [("NAME", "LANGUAGE", "IMAGE", "DIGEST", "CREATED")] + [
        (r["name"], r["language"], r["image"], short_digest(r["digest"]), format_time(r["created"])) for r in runtimes
    ]
    click.echo("\n".join(table(rows)))


@runtime.command()
@click.argument("name")
@click.pass_obj
def rm(client: Client, name: str) -> None:
    """Remove runtime NAME; refused while a function's kept version runs on it."""
    removed = client.remove_runtime(name)
    click.echo(f"Removed runtime {removed['removed']}")
