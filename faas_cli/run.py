"""``faas run``: code run once in a throw-away container of a runtime, deploying nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from faas_cli.client import Client
from faas_cli.source import entry_of, read_code
from faasd.printable import printable


def parse_input(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    """``--input`` as JSON; text that is not JSON is the event as a string."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


@click.command()
@click.option("--runtime", required=True, metavar="RUNTIME", help="The runtime to run on (faas runtime list).")
@click.option(
    "--code",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    required=True,
    metavar="PATH",
    help="A source file, or a directory of them (repeatable).",
)
@click.option("--entry", default=None, metavar="FILE", help="The file the runtime loads.")
@click.option("--handler", default=None, metavar="NAME", help="The function the entry exports.  [default: handler]")
@click.option("--input", "event", default=None, callback=parse_input, metavar="JSON", help="The event, as JSON.")
@click.option("--memory", default=None, help="Memory of the container, e.g. 128m.")
@click.option("--timeout", default=None, help="Seconds the run may take.")
@click.option(
    "--stream",
    is_flag=True,
    help="Print each line the code prints and item it yields as it comes, then the answer.",
)
@click.pass_obj
def run(
    client: Client,
    runtime: str,
    code: tuple[Path, ...],
    entry: str | None,
    handler: str | None,
    event: object,
    stream: bool,
    **limits: str | None,
) -> None:
    """Run code once with an event, in a throw-away container of RUNTIME; print what came of it as
    JSON: result, stdout, stderr, exit_code, duration_ms (and error). Exits 1 when the code failed.
    With --stream, each line the code prints and item it yields is printed first, as it comes.

    \b
    Example:
      faas run --runtime python --code add.py --input '{"a": 1, "b": 2}'
    """
    files = read_code(code)
    body = {"runtime": runtime, "files": files, "entry": entry_of(files, entry), "input": event}
    body |= {"handler": handler} if handler else {}
    chosen = {k: v for k, v in limits.items() if v is not None}
    answer: dict[str, object] = {}
    if stream:
        for name, data in client.run_stream(body, chosen):
            if name == "message":
                click.echo(printable(data))  # the code's own text: its controls escaped
            else:
                answer = json.loads(data)
    else:
        answer = client.run(body, chosen)
    click.echo(json.dumps(answer, indent=2))
    if answer.get("exit_code") != 0:
        sys.exit(1)
