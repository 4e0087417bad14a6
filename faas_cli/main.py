"""``faas``: deploy and inspect functions on a faasd daemon.

Exit codes: 0 success; 1 a user error or a refused request (bad usage or input, unknown
function, missing or wrong token, a failed ``docker save``); 2 faasd could not be reached, and
only then, so a script may retry on 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import click
from click.exceptions import NoArgsIsHelpError
from click.shell_completion import CompletionItem

from faas_cli.apply import apply
from faas_cli.build import build
from faas_cli.client import (
    DEFAULT_SOCKET,
    Client,
    ClientError,
    DaemonUnreachable,
    HttpEndpoint,
    UnixEndpoint,
)
from faas_cli.engine import find_engine, saved_image
from faas_cli.manifest import read_manifest
from faas_cli.progress import Progress
from faas_cli.pulling import PullProgress, docker_config_path, docker_credentials
from faas_cli.run import run
from faas_cli.runtimes import runtime
from faas_cli.source import entry_of, read_code
from faas_cli.stats import parse, render, to_json
from faas_cli.upload import stream_upload, tarball_upload
from faas_cli.versions import describe, format_size, rollback, table, versions
from faasd.errors import FaasError
from faasd.images.archive import check_reference
from faasd.images.reference import Reference
from faasd.limits import Limits
from faasd.printable import printable, printable_stream

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


@contextlib.contextmanager
def usage_errors_exit_refused() -> Iterator[None]:
    """A usage error is one line starting ``faas: `` like every other error, and exits 1: click
    would print its usage block and exit 2, and here 2 means only that faasd could not be reached."""
    try:
        yield
    except NoArgsIsHelpError as exc:
        exc.exit_code = EXIT_REFUSED  # type: ignore[misc]  # plain ``faas``: the help is the answer
        raise
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "faas"
        message = exc.format_message().rstrip()
        end = "" if message.endswith((".", "?", "!")) else "."
        click.echo(f"faas: {message}{end} See '{path} --help'.", err=True)
        raise click.exceptions.Exit(EXIT_REFUSED) from exc


class FaasGroup(click.Group):
    """Turns every failure into one line on stderr and the documented exit code."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        with usage_errors_exit_refused():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with usage_errors_exit_refused():
                return super().invoke(ctx)
        except DaemonUnreachable as exc:
            click.echo(f"faas: {printable(str(exc))}", err=True)
            ctx.exit(EXIT_UNREACHABLE)
        except ClientError as exc:
            click.echo(f"faas: {printable(str(exc))}", err=True)
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


def parse_image(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """An image reference, checked as faasd will check it, before any engine runs: one starting
    with '-' would reach ``docker save`` as an option, and a typo would cost a whole save."""
    if value is None:
        return None
    if value.startswith("-"):
        raise click.BadParameter(f"{value!r} is not an image name: give NAME[:TAG], e.g. hello:1")
    try:
        check_reference(value, "image")
    except FaasError as exc:
        raise click.BadParameter(exc.message) from exc
    return value


def parse_environment(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` pairs as a mapping; the daemon checks names and values."""
    environment = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r}: give NAME=VALUE, e.g. GREETING=hello")
        environment[name] = text
    return environment


# What a shell waits for names to complete, at most, however the daemon behaves.
COMPLETION_TIMEOUT_SECONDS = 2.0


def make_client(
    socket_path: Path, host: HttpEndpoint | None, token: str | None, timeout: float | None = None
) -> Client:
    """The client the global options describe: over TCP with --host, else on the unix socket."""
    endpoint = dataclasses.replace(host, timeout=timeout) if host else UnixEndpoint(socket_path, timeout)
    return Client(endpoint, token)


def complete_function_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of NAME from the daemon's functions; none when it cannot be asked in time."""
    params = ctx.find_root().params
    client = make_client(
        params.get("socket_path") or DEFAULT_SOCKET,
        params.get("host"),
        params.get("token"),
        timeout=COMPLETION_TIMEOUT_SECONDS,
    )
    try:
        names = [function["name"] for function in client.functions()]
    except ClientError:
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


function_name = click.argument("name", shell_complete=complete_function_names)

# faas new's limits as faasd ships them; the daemon decides, and faasd --timeout and --warm change two.
SHIPPED_LIMITS = {
    "memory": format_size(Limits.memory_bytes),
    "cpus": f"{Limits.cpus:g}",
    "pids": str(Limits.pids),
    "timeout": f"{Limits.timeout_seconds:g}",
    "tmp_size": format_size(Limits.tmp_bytes),
    "warm": str(Limits.warm),
    "reuse": str(Limits.reuse),
}


def daemon_default(limit: str, daemon_flag: str | None = None) -> str:
    """How ``faas new --help`` shows a limit left out: the daemon's to choose, not a fixed value."""
    setting = f"faasd {daemon_flag}, " if daemon_flag else ""
    return f"  [default: the daemon's: {setting}{SHIPPED_LIMITS[limit]} as shipped]"


json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


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
      faas new hello -t hello          # docker save hello, streamed to faasd
      curl http://$(faas ip hello)/
    \b
    Over TCP, to a faasd started with --listen 127.0.0.1:8080:
      export FAAS_HOST=http://127.0.0.1:8080
      export FAAS_TOKEN=$(sudo cat /var/lib/faasd/api.token)
      faas list
    \b
    Shell completion (bash; zsh and fish alike, with zsh_source or fish_source):
      eval "$(_FAAS_COMPLETE=bash_source faas)"
    \b
    Exit codes:
      0  success
      1  a user error or a refused request: bad usage or input, unknown function,
         missing or wrong token, a failed docker save
      2  faasd could not be reached (and only then)
    """
    ctx.obj = make_client(socket_path, host, token)


@main.command()
@click.argument("name", required=False, shell_complete=complete_function_names)
@click.option(
    "-t",
    "--tag",
    "image",
    default=None,
    callback=parse_image,
    metavar="IMAGE",
    help="The image to deploy, saved with docker or podman; with -f, the one to take from the archive.",
)
@click.option(
    "-f",
    "--file",
    "tarball",
    type=click.File("rb"),
    default=None,
    metavar="FILE",
    help="Deploy this image tarball (docker save, podman save, OCI); - is standard input.  "
    "[default: standard input, unless -t is given]",
)
@click.option(
    "--engine",
    default=None,
    envvar="FAAS_ENGINE",
    metavar="PROGRAM",
    help="What saves -t IMAGE: docker or podman, by name or path.  [default: docker if installed, else podman]",
)
@click.option(
    "--pull",
    "reference",
    default=None,
    callback=parse_image,
    metavar="REF",
    help="Have faasd pull this image from its registry instead, e.g. 127.0.0.1:5000/team/app:1.",
)
@click.option(
    "-e",
    "--env",
    "environment",
    multiple=True,
    callback=parse_environment,
    metavar="NAME=VALUE",
    help="Set an environment variable over the image's (repeatable).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress (a pull's shows line by line when not at a terminal).")
@click.option("--force", is_flag=True, help="Add a version even when the image and limits are the current version's.")
@click.option(
    "--check",
    is_flag=True,
    help="Start one container first; refuse the version, with its last log lines, if its handler never gets ready.",
)
@json_flag
@click.option("--memory", default=None, help="Memory per container, e.g. 128m." + daemon_default("memory"))
@click.option("--cpus", default=None, help="CPUs per container, e.g. 0.5." + daemon_default("cpus"))
@click.option("--pids", default=None, help="Processes and threads per container." + daemon_default("pids"))
@click.option(
    "--timeout", default=None, help="Seconds a connection's container may run." + daemon_default("timeout", "--timeout")
)
@click.option(
    "--tmp-size", default=None, help="Size of the container's /tmp (in memory), e.g. 16m." + daemon_default("tmp_size")
)
@click.option(
    "--warm",
    default=None,
    help="Containers kept started ahead of demand, at most; 0: none." + daemon_default("warm", "--warm"),
)
@click.option(
    "--reuse",
    default=None,
    help="Connections one container serves one after another: throughput over isolation." + daemon_default("reuse"),
)
@click.option(
    "--sandbox",
    type=click.Choice(["runc", "fork"]),
    default=None,
    help="runc: a container started per connection; fork: a sandbox forked per connection from a template "
    "that loaded the app once (needs serve() from faas_handler.py).  [default: the daemon's, runc]",
)
@click.option(
    "--runtime", default=None, metavar="RUNTIME", help="Deploy source code on this runtime (faas runtime list)."
)
@click.option(
    "--code",
    "code",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    metavar="PATH",
    help="With --runtime: a source file, or a directory of them (repeatable).",
)
@click.option("--entry", default=None, metavar="FILE", help="With --runtime: the file the runtime loads.")
@click.option(
    "--handler",
    default=None,
    metavar="NAME",
    help="With --runtime: the function the entry exports.  [default: handler]",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Deploy the source a GraalFaaS-style manifest describes (JSON with comments); NAME defaults to its id.",
)
@click.pass_obj
def new(
    client: Client,
    name: str | None,
    image: str | None,
    tarball: io.BufferedReader | None,
    engine: str | None,
    reference: str | None,
    environment: dict[str, str],
    quiet: bool,
    force: bool,
    check: bool,
    as_json: bool,
    runtime: str | None,
    code: tuple[Path, ...],
    entry: str | None,
    handler: str | None,
    manifest: Path | None,
    **limits: str | None,
) -> None:
    """Deploy an image, or source code on a runtime, as function NAME (again: a new version, same IP).

    With -t IMAGE alone, faas runs `docker save IMAGE` (or podman's) and streams the archive
    to faasd as it is written. A tarball comes from -f FILE or standard input instead. With
    --runtime and --code, the code is checked in a container of the runtime and deployed on it.
    With --pull REF, faasd pulls the image from its registry itself.

    Limits apply to every container of this version; the ones left out take the daemon's
    defaults (shown as faasd ships them), not the previous version's. The current version's image again, with
    the same limits and variables, adds no version ("same image as version N") unless --force:
    pulled again, a reference makes a new version only if it names another image now.
    With --check (an image uploaded or pulled, or source), one container of the new version is
    started before it is registered: a handler that exits or never connects to /control.sock is
    refused with its last log lines.

    \b
    Example:
      faas new hello -t hello:latest
      docker save hello | faas new hello
      faas new hello -f both.tar -t hello:2 --memory 64m --timeout 5
      faas new add --runtime python --code handler.py
      faas new --manifest my-function.jsonc
      faas new hello --pull 127.0.0.1:5000/team/hello:1 -e GREETING=hi
      faas new hello -t hello:2 --check
    """
    settings = {key: value for key, value in limits.items() if value is not None}
    if manifest is not None:
        if runtime or code or entry or handler or image is not None or tarball is not None or environment:
            raise click.UsageError("--manifest says the runtime, code, entry and handler: give it alone")
        manifest_name, body = read_manifest(manifest)
        print_deployed(client.deploy_source(name or manifest_name, body, settings, force, check), as_json)
        return
    if name is None:
        raise click.UsageError("Missing argument 'NAME'.")  # as click says it, now that --manifest may name it
    if reference is not None:
        if image is not None or tarball is not None:
            raise click.UsageError("--pull takes the image from a registry: give it without -t or -f")
        pull_image(client, name, reference, settings, environment, force, check, quiet, as_json)
        return
    if runtime is not None or code:
        if runtime is None or not code or image is not None or tarball is not None or environment:
            raise click.UsageError("deploy source with --runtime RUNTIME --code PATH, and no image (-t, -f) or -e")
        function = deploy_code(client, name, runtime, code, entry, handler, settings, force, check)
        print_deployed(function, as_json)
        return
    with contextlib.ExitStack() as stack:
        if tarball is None and image is not None:
            path = find_engine(engine, say=lambda note: click.echo(note, err=True))
            upload = stream_upload(stack.enter_context(saved_image(path, image)), client)
            source: dict[str, str | None] = {"image": image}
        else:
            tarball = tarball or cast(io.BufferedReader, sys.stdin.buffer)
            if tarball.isatty():
                raise click.UsageError(
                    "no image given: name one with -t IMAGE, pipe one in (docker save IMAGE | faas new NAME) "
                    "or use -f FILE"
                )
            upload, source = tarball_upload(tarball, client), {"tag": image}
        blocks: Iterable[bytes] = upload.blocks
        if not quiet and sys.stderr.isatty():
            blocks = Progress(sys.stderr, upload.size, upload.left_out).track(blocks)
        function = client.deploy(
            name, blocks, limits=settings, force=force, environment=environment, check=check, **source
        )
    print_deployed(function, as_json)


def print_deployed(function: dict[str, Any], as_json: bool) -> None:
    """What ``faas new`` says of the function it deployed, or of the version that stays."""
    if as_json:
        print_json(function)
    elif "same_as" in function:
        click.echo(
            f"{function['name']}: same image as version {function['same_as']}, which stays current at "
            f"{function['ip']} (nothing deployed; --force adds a version)"
        )
    else:
        click.echo(f"Deployed {function['name']} at {function['ip']} (version {function['version']})")


def deploy_code(
    client: Client,
    name: str,
    runtime: str,
    code: tuple[Path, ...],
    entry: str | None,
    handler: str | None,
    limits: dict[str, str],
    force: bool,
    check: bool,
) -> dict[str, Any]:
    """``faas new NAME --runtime R --code PATH``: the files read here, checked and deployed by faasd."""
    files = read_code(code)
    body = {"runtime": runtime, "files": files, "entry": entry_of(files, entry)}
    return client.deploy_source(name, body | ({"handler": handler} if handler else {}), limits, force, check)


def pull_image(
    client: Client,
    name: str,
    reference: str,
    limits: dict[str, str],
    environment: dict[str, str],
    force: bool,
    check: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """``faas new NAME --pull REF``: faasd pulls; its progress is shown on stderr."""
    try:
        registry = Reference.parse(reference).registry
    except FaasError as exc:
        raise click.BadParameter(exc.message, param_hint="--pull") from None
    credentials = docker_credentials(registry, docker_config_path())
    events: Iterable[dict[str, Any]] = client.pull(
        name, reference, limits, environment, credentials, force=force, check=check
    )
    if not quiet:
        events = PullProgress(sys.stderr, live=sys.stderr.isatty()).track(events)
    seen = list(events)
    resolved, outcome = seen[0], seen[-1]
    function = outcome["function"]
    if as_json:
        print_json(function | {"changed": outcome["changed"]})
    elif outcome["changed"]:
        click.echo(f"Deployed {function['name']} at {function['ip']} (version {function['version']})")
    else:
        click.echo(
            f"{function['name']}: same image as version {function['version']}, which stays current at "
            f"{function['ip']} ({reference} is {resolved['digest']}; nothing deployed, --force adds a version)"
        )


@main.command()
@click.argument("registry")
@click.option("-u", "--username", prompt=True, help="The user name at the registry.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
@click.pass_obj
def login(client: Client, registry: str, username: str, password_stdin: bool) -> None:
    """Give faasd a user name and password for REGISTRY (HOST:PORT), for every pull from it.

    faasd checks them with the registry first, then keeps them in a file only root can read
    (STATE_DIR/registry-logins.json). Credentials in your Docker config.json are sent with
    each pull instead, and kept nowhere.

    \b
    Example:
      faas login 127.0.0.1:5000 -u ci --password-stdin < password.txt
    """
    if password_stdin:
        password = sys.stdin.read().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True)
    client.login(registry, username, password)
    click.echo(f"faasd holds a login for {registry} as {username}")


@main.command()
@click.argument("registry")
@click.pass_obj
def logout(client: Client, registry: str) -> None:
    """Have faasd forget its login for REGISTRY.

    \b
    Example:
      faas logout 127.0.0.1:5000
    """
    client.logout(registry)
    click.echo(f"faasd forgot its login for {registry}")


@main.command()
@function_name
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
@json_flag
@click.pass_obj
def list_(client: Client, as_json: bool) -> None:
    """List deployed functions.

    \b
    Example:
      faas list --json | jq -r '.[].ip'
    """
    functions = client.functions()
    if as_json:
        print_json(functions)
        return
    rows: list[tuple[str, ...]] = [("NAME", "IP", "VERSION", "CMD")] + [
        (f["name"], f["ip"], str(f["version"]), " ".join(f["entrypoint"] + f["cmd"])) for f in functions
    ]
    click.echo("\n".join(table(rows)))


@main.command()
@function_name
@json_flag
@click.pass_obj
def rm(client: Client, name: str, as_json: bool) -> None:
    """Remove function NAME: its address, its versions and its running connections.

    \b
    Example:
      faas rm hello
    """
    removed = client.remove(name)
    if as_json:
        print_json(removed)
    else:
        click.echo(f"Removed {removed['removed']} ({removed['ip']})")


@main.command()
@click.option("--raw", is_flag=True, help="Print the Prometheus text as faasd serves it on /metrics.")
@json_flag
@click.pass_obj
def stats(client: Client, raw: bool, as_json: bool) -> None:
    """Show requests, latencies, containers and errors, as counted since faasd started.

    HANDLER counts connections the function answered itself; 502, 503 and 504 those the daemon
    answered for it. START is from accepting a connection to its handler taking it.

    \b
    Example:
      faas stats
      faas stats --raw | grep faasd_requests_total
      faas stats --json | jq '.functions.hello.requests'
    """
    if raw and as_json:
        raise click.UsageError("--raw and --json are two formats: give one")
    text = client.metrics()
    if as_json:
        print_json(to_json(parse(text)))
    else:
        click.echo(text.rstrip("\n") if raw else "\n".join(render(parse(text))))


@main.command()
@function_name
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
    Controls a function printed (escape sequences, CR, BEL) are shown escaped: \\x1b, \\r, \\x07.

    \b
    Example:
      faas logs hello --tail 20
      faas logs hello -f --since 10m
    """
    out = sys.stdout.buffer
    try:
        with contextlib.closing(client.logs(name, tail=tail, since=since, follow=follow)) as chunks:
            # What the function printed reaches the terminal with its controls escaped.
            for chunk in printable_stream(chunks):
                out.write(chunk)
                out.flush()
    except KeyboardInterrupt:
        pass  # how -f is meant to end
    except BrokenPipeError:
        # The reader (head, say) has had enough; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


for command in (versions, rollback, describe, build, apply, runtime, run):
    main.add_command(command)
