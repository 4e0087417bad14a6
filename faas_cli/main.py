"""``faas``: deploy and inspect functions on a faasd daemon.

Exit codes: 0 success, 1 the request was refused (bad input, unknown function, missing or
wrong token), 2 faasd could not be reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import click

from faas_cli.client import DEFAULT_SOCKET, ApiError, Client, DaemonUnreachable, HttpEndpoint, UnixEndpoint
from faas_cli.stats import parse, render
from faas_cli.versions import describe, rollback, versions

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


class FaasGroup(click.Group):
    """Turns client errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DaemonUnreachable as exc:
            click.echo(f"faas: {exc}", err=True)
            ctx.exit(EXIT_UNREACHABLE)
        except ApiError as exc:
            click.echo(f"faas: {exc}", err=True)
            ctx.exit(EXIT_REFUSED)


def parse_host(_ctx: click.Context, _param: click.Parameter, value: str | None) -> HttpEndpoint | None:
    if not value:
        return None
    try:
        return HttpEndpoint.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def parse_token(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """The token without the newline ``$(cat api.token)`` or a pasted line may bring along."""
    if value is None:
        return None
    token = value.strip()
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise click.BadParameter("the token is the one line in faasd's api.token: printable ASCII, no spaces")
    return token


@click.group(cls=FaasGroup, context_settings={"auto_envvar_prefix": "FAAS"})
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_SOCKET,
    show_default=True,
    envvar="FAAS_SOCKET",
    help="faasd's control socket (used unless --host is given).",
)
@click.option(
    "--host",
    default=None,
    callback=parse_host,
    metavar="URL",
    envvar="FAAS_HOST",
    help="Reach a faasd started with --listen over TCP instead, e.g. http://127.0.0.1:8080.",
)
@click.option(
    "--token",
    default=None,
    callback=parse_token,
    envvar="FAAS_TOKEN",
    help="The token for --host: the contents of api.token in faasd's state dir.",
)
@click.version_option(package_name="faasd")
@click.pass_context
def main(ctx: click.Context, socket_path: Path, host: HttpEndpoint | None, token: str | None) -> None:
    """Deploy and inspect functions served by faasd.

    \b
    Example:
      docker save hello | faas new hello
      curl http://$(faas ip hello)/
    \b
    Over TCP, to a faasd started with --listen 127.0.0.1:8080:
      export FAAS_HOST=http://127.0.0.1:8080
      export FAAS_TOKEN=$(sudo cat /var/lib/faasd/api.token)
      faas list
    """
    ctx.obj = Client(host or UnixEndpoint(socket_path), token)


@main.command()
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "tarball",
    type=click.File("rb"),
    default=None,
    help="Image tarball to deploy.  [default: standard input]",
)
@click.option("--tag", default=None, help="Which image to take from an archive holding several.")
@click.option("--memory", default=None, help="Memory per container, e.g. 128m.  [default: 256m]")
@click.option("--cpus", default=None, help="CPUs per container, e.g. 0.5.  [default: 1]")
@click.option("--pids", default=None, help="Processes and threads per container.  [default: 128]")
@click.option("--timeout", default=None, help="Seconds a connection's container may run.  [default: 30]")
@click.option("--tmp-size", default=None, help="Size of the container's /tmp (in memory), e.g. 16m.  [default: 64m]")
@click.option("--warm", default=None, help="Containers kept started ahead of demand, at most; 0: none.  [default: 4]")
@click.option(
    "--reuse",
    default=None,
    help="Connections one container serves one after another: throughput over isolation.  [default: 1]",
)
@click.pass_obj
def new(client: Client, name: str, tarball: IO[bytes] | None, tag: str | None, **limits: str | None) -> None:
    """Deploy an image tarball as function NAME (again: a new version, same IP).

    Limits apply to every container of this version; the ones left out take the daemon's
    defaults (shown), not the previous version's.

    \b
    Example:
      docker save hello | faas new hello
      faas new hello -f hello.tar --tag hello:2 --memory 64m --timeout 5
    """
    if tarball is None:
        if sys.stdin.isatty():
            raise click.UsageError("no image given: pipe one in (docker save IMAGE | faas new NAME) or use -f FILE")
        tarball = sys.stdin.buffer
    settings = {key: value for key, value in limits.items() if value is not None}
    function = client.deploy(name, tarball, tag=tag, limits=settings)
    click.echo(f"Deployed {function['name']} at {function['ip']} (version {function['version']})")


@main.command()
@click.argument("name")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="The address of this version only: given on first ask, it serves that version alone.",
)
@click.pass_obj
def ip(client: Client, name: str, version: int | None) -> None:
    """Print only the IP address of function NAME.

    With --version V: an address of its own that always serves version V, to test it while
    the function's address serves the current one. It stays until V is pruned or NAME removed.

    \b
    Example:
      curl http://$(faas ip hello)/
      curl http://$(faas ip hello --version 2)/
    """
    click.echo(client.get(name)["ip"] if version is None else client.version_address(name, version)["ip"])


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_(client: Client, as_json: bool) -> None:
    """List deployed functions.

    \b
    Example:
      faas list --json | jq -r '.[].ip'
    """
    functions = client.list()
    if as_json:
        click.echo(json.dumps(functions, indent=2))
        return
    rows = [("NAME", "IP", "VERSION", "CMD")] + [
        (f["name"], f["ip"], str(f["version"]), " ".join(f["entrypoint"] + f["cmd"])) for f in functions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])


@main.command()
@click.argument("name")
@click.pass_obj
def rm(client: Client, name: str) -> None:
    """Remove function NAME: its address, its versions and its running connections.

    \b
    Example:
      faas rm hello
    """
    removed = client.remove(name)
    click.echo(f"Removed {removed['removed']} ({removed['ip']})")


@main.command()
@click.option("--raw", is_flag=True, help="Print the Prometheus text as faasd serves it on /metrics.")
@click.pass_obj
def stats(client: Client, raw: bool) -> None:
    """Show requests, latencies, containers and errors, as counted since faasd started.

    HANDLER counts connections the function answered itself; 502, 503 and 504 those the daemon
    answered for it. START is from accepting a connection to its handler taking it.

    \b
    Example:
      faas stats
      faas stats --raw | grep faasd_requests_total
    """
    text = client.metrics()
    click.echo(text.rstrip("\n") if raw else "\n".join(render(parse(text))))


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they are written; Ctrl-C stops.")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N", help="Only the last N lines.")
@click.option(
    "--since",
    default=None,
    metavar="S",
    help="Only lines from S on: an RFC 3339 time (2024-05-01T12:00:00Z) or a duration back from now (10m, 1h30m).",
)
@click.pass_obj
def logs(client: Client, name: str, follow: bool, tail: int | None, since: str | None) -> None:
    """Print what function NAME's containers wrote, one line each.

    Each line reads TIME REQUEST-ID STREAM TEXT, where STREAM is stdout, stderr or faasd
    (the daemon's own line on how the connection ended: outcome, exit status, duration).

    \b
    Example:
      faas logs hello --tail 20
      faas logs hello -f --since 10m
    """
    out = click.get_binary_stream("stdout")
    try:
        with contextlib.closing(client.logs(name, tail=tail, since=since, follow=follow)) as chunks:
            for chunk in chunks:
                out.write(chunk)
                out.flush()
    except KeyboardInterrupt:
        pass  # how -f is meant to end
    except BrokenPipeError:
        # The reader (head, say) has had enough; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


for command in (versions, rollback, describe):
    main.add_command(command)
