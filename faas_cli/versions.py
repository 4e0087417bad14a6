"""``faas versions``, ``faas rollback`` and ``faas describe``: a function's kept versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from faas_cli.client import Client
from faasd.printable import printable

SIZE_UNITS = (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10))
DIGEST_CHARS = 12  # as docker shows image ids


def format_size(size: int) -> str:
    """``268435456`` as ``256m``: the largest unit that divides it, as ``faas new --memory`` takes it."""
    for suffix, unit in SIZE_UNITS:
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def format_limits(limits: dict[str, Any]) -> str:
    return (
        f"memory {format_size(limits['memory_bytes'])}  cpus {limits['cpus']:g}  pids {limits['pids']}  "
        f"timeout {limits['timeout_seconds']:g}s  tmp {format_size(limits['tmp_bytes'])}  "
        f"sandbox {limits['sandbox']}"
    )


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:DIGEST_CHARS]


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as lines of columns padded to their widest cell, every cell's controls escaped."""
    rows = [tuple(map(printable, row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def render_versions(versions: list[dict[str, Any]]) -> list[str]:
    """The lines ``faas versions`` prints: one row per kept version, the current one starred."""
    rows: list[tuple[str, ...]] = [
        ("VERSION", "CURRENT", "IMAGE", "DIGEST", "CREATED", "MEMORY", "CPUS", "PIDS", "TIMEOUT", "SANDBOX", "IP")
    ]
    for v in versions:
        limits = v["limits"]
        rows.append(
            (
                str(v["version"]),
                "*" if v["current"] else "",
                v["image"],
                short_digest(v["digest"]),
                format_time(v["created"]),
                format_size(limits["memory_bytes"]),
                f"{limits['cpus']:g}",
                str(limits["pids"]),
                f"{limits['timeout_seconds']:g}s",
                limits["sandbox"],
                v["ip"] or "-",
            )
        )
    return table(rows)


def gateway_field(function: dict[str, Any]) -> list[tuple[str, str]]:
    """The Gateway line of ``faas describe``, when a gateway runs (a faasd without one sends null)."""
    gateway = function.get("gateway")
    if not gateway:
        return []
    return [("Gateway", f"{gateway['url']}  (curl -H 'Host: {function['name']}' http://{gateway['address']}/)")]


def render_describe(function: dict[str, Any]) -> list[str]:
    """The lines ``faas describe`` prints: the function as it serves now, then its versions."""
    requests = function["requests"]
    by_status = ", ".join(f"{status} {count}" for status, count in sorted(requests.items()))
    kept = ", ".join(str(v["version"]) for v in function["versions"])
    fields = [
        ("Name", function["name"]),
        ("IP", function["ip"]),
        *gateway_field(function),
        ("Version", f"{function['version']} (kept: {kept})"),
        ("Image", function["image"]),
        *([("Runtime", function["runtime"]), ("Entry", function["entry"])] if "runtime" in function else []),
        ("Digest", function["digest"]),
        ("Command", " ".join(function["entrypoint"] + function["cmd"]) or "-"),
        ("Limits", format_limits(function["limits"])),
        ("Created", format_time(function["created"])),
        ("Updated", format_time(function["updated"])),
        ("Requests", f"{sum(requests.values())}" + (f" ({by_status})" if by_status else "")),
    ]
    width = max(len(label) for label, _ in fields) + 1
    return [f"{label + ':':<{width}}  {printable(value)}" for label, value in fields] + [
        "",
        "Versions:",
        *render_versions(function["versions"]),
    ]


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def versions(client: Client, name: str, as_json: bool) -> None:
    """List the kept versions of function NAME; * marks the one new connections get.

    IP is a version's own address, once asked for with 'faas ip NAME --version V'.

    \b
    Example:
      faas versions hello
      faas versions hello --json | jq '.versions[] | select(.current) | .version'
    """
    listing = client.versions(name)
    click.echo(json.dumps(listing, indent=2) if as_json else "\n".join(render_versions(listing["versions"])))


@click.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1), required=False)
@click.pass_obj
def rollback(client: Client, name: str, version: int | None) -> None:
    """Make VERSION of function NAME current again (by default the one before the current).

    Nothing is imported: new connections get that version at once, running ones finish on
    theirs. The next 'faas new' still gets a number above every earlier one.

    \b
    Example:
      faas rollback hello
      faas rollback hello 2
    """
    before = client.get(name)["version"]
    function = client.rollback(name, version)
    # A move to a newer kept version (after rolling back too far) is no rollback.
    verb = "Switched" if function["version"] > before else "Rolled back"
    click.echo(f"{verb} {function['name']} to version {function['version']} ({printable(function['image'])})")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def describe(client: Client, name: str, as_json: bool) -> None:
    """Show function NAME in full: image, command, limits, address, versions, requests served.

    Requests are counted since faasd started, by the status the client saw: 'handler' when
    the function answered, else the code faasd answered with.

    \b
    Example:
      faas describe hello
      faas describe hello --json | jq .requests
    """
    function = client.get(name)
    click.echo(json.dumps(function, indent=2) if as_json else "\n".join(render_describe(function)))
