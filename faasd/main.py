"""``faasd``: the command line of the daemon. It only builds a ``Config`` and calls ``run``."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path

import click

from faasd import daemon
from faasd.admission import CONTAINERS_PER_CPU, DEFAULT_QUEUE_TIMEOUT, QUEUE_PER_SLOT, AdmissionLimits
from faasd.config import Config, LogLimits, TcpAddress
from faasd.limits import Limits, parse_size

REGISTRY_PATTERN = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?")
# Everything the daemon writes is root's alone: files 0600 (the database and its WAL, bundles'
# config.json, which hold the functions' Env). Directories keep their search bit for others
# (0711), since containers run as unprivileged host uids and must reach their rootfs and control
# socket through them, but no one else may list or read them.
PRIVATE_UMASK = 0o066
DOMAIN_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def parse_range(_ctx: click.Context, _param: click.Parameter, value: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise click.BadParameter("the range must lie inside 127.0.0.0/8 (the loopback network)")
    if network.num_addresses < 4:
        raise click.BadParameter("the range is too small: use a /30 or larger")
    return network


def parse_address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> TcpAddress | None:
    if not value:
        return None
    try:
        return TcpAddress.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def parse_domain(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    domain = value.lower().strip(".")
    if not DOMAIN_PATTERN.fullmatch(domain):
        raise click.BadParameter(f"{value!r} is not a domain name (letters, digits, '-' and dots), e.g. fn.example.org")
    return domain


def parse_byte_size(_ctx: click.Context, _param: click.Parameter, value: str | int) -> int:
    try:
        size = parse_size(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if size < 1:
        raise click.BadParameter("the size must be at least 1 byte")
    return size


def parse_registries(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> frozenset[str]:
    """Registries named as a reference names them: HOST:PORT (or HOST), no scheme nor path."""
    for value in values:
        if not REGISTRY_PATTERN.fullmatch(value):
            raise click.BadParameter(f"{value!r}: give HOST:PORT as image references write it, e.g. 127.0.0.1:5000")
    return frozenset(values)


@click.command(context_settings={"auto_envvar_prefix": "FAASD", "show_default": True})
@click.option("--state-dir", type=click.Path(path_type=Path), default=Config.state_dir, help="Database and rootfs.")
@click.option(
    "--run-dir", type=click.Path(path_type=Path), default=Config.run_dir, help="Bundles, control sockets, runc state."
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Control API socket.  [default: RUN_DIR/faasd.sock]",
)
@click.option(
    "--ip-range",
    default=str(Config.ip_range),
    callback=parse_range,
    help="Loopback range functions get their addresses from.",
)
@click.option("--runc", "runc_binary", default=Config.runc_binary, help="The runc binary (name or path).")
@click.option("--port", default=Config.port, type=click.IntRange(1, 65535), help="Port functions listen on.")
@click.option(
    "--timeout",
    default=Limits.timeout_seconds,
    type=click.FloatRange(min=0.1),
    help="Seconds one connection's container may run before it is killed.",
)
@click.option(
    "--start-timeout",
    default=Config.start_timeout_seconds,
    type=click.FloatRange(min=0.1),
    help="Seconds a handler has to connect to /control.sock before the client gets a 502.",
)
@click.option(
    "--drain-timeout",
    default=Config.drain_seconds,
    type=click.FloatRange(min=0),
    help="Seconds running connections may take to finish after SIGTERM before they are ended.",
)
@click.option(
    "--warm",
    default=Limits.warm,
    type=click.IntRange(0, 256),
    help="Containers a busy function keeps started ahead of demand, at most (faas new --warm overrides).",
)
@click.option(
    "--sandbox",
    type=click.Choice(["runc", "fork"]),
    default=Limits.sandbox,
    help="How a connection gets its never-used sandbox, for functions deployed without their own "
    "(faas new --sandbox): a runc container, or a child forked from a template.",
)
@click.option(
    "--warm-idle",
    default=Config.warm_idle_seconds,
    type=click.FloatRange(min=0),
    help="Seconds without a connection after which a function's warm containers are stopped.",
)
@click.option(
    "--max-containers",
    type=click.IntRange(min=1),
    default=None,
    help=f"Containers running at once, all functions together.  [default: {CONTAINERS_PER_CPU} per CPU]",
)
@click.option(
    "--max-containers-per-function",
    type=click.IntRange(min=1),
    default=None,
    help="Containers one function may run at once.  [default: --max-containers]",
)
@click.option(
    "--queue",
    "queue_size",
    type=click.IntRange(min=0),
    default=None,
    help=f"Connections that may wait for a slot; more get 503.  [default: {QUEUE_PER_SLOT} x --max-containers]",
)
@click.option(
    "--queue-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_QUEUE_TIMEOUT,
    help="Seconds a connection may wait for a slot before it gets 503.",
)
@click.option(
    "--listen",
    default=None,
    callback=parse_address,
    metavar="HOST:PORT",
    help="Also serve the control API on TCP, for clients with the token in STATE_DIR/api.token.  [default: off]",
)
@click.option(
    "--gateway",
    default=None,
    callback=parse_address,
    metavar="HOST:PORT",
    help="Also serve every function on this one address, routed by the Host header.  [default: off]",
)
@click.option(
    "--gateway-domain",
    default=Config.gateway_domain,
    callback=parse_domain,
    help="Through the gateway, NAME.DOMAIN (or just NAME) reaches function NAME.",
)
@click.option(
    "--log-max-bytes",
    default=LogLimits.max_file_bytes,
    type=click.IntRange(min=64 * 1024),
    help="Size at which a function's log file is rotated.",
)
@click.option(
    "--log-max-files",
    default=LogLimits.max_files,
    type=click.IntRange(min=1),
    help="Log files kept per function, the current one included.",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write faasd's own log to this file, rotated at 10 MiB with 5 kept, not to stderr.  [default: stderr]",
)
@click.option(
    "--max-image-size",
    default=f"{Config.max_image_bytes // 1024**3}g",
    callback=parse_byte_size,
    metavar="SIZE",
    help="Most an image may unpack to: its layers uncompressed, all together (k, m, g, t: powers of 1024).",
)
@click.option(
    "--max-image-entries",
    default=Config.max_image_entries,
    type=click.IntRange(min=1),
    help="Most entries (files, directories, links, whiteouts) an image's layers may hold together.",
)
@click.option(
    "--keep-versions",
    default=Config.keep_versions,
    type=click.IntRange(min=1),
    help="Versions kept per function for rollback, the current one included; older rootfs are removed.",
)
@click.option(
    "--insecure-registry",
    "insecure_registries",
    multiple=True,
    callback=parse_registries,
    metavar="HOST:PORT",
    help="Pull from this registry over plain HTTP, without TLS (repeatable).  [default: none]",
)
@click.option(
    "--registry-timeout",
    default=Config.registry_timeout_seconds,
    type=click.FloatRange(min=0.1),
    help="Seconds a registry may take to accept a connection, or between two reads, during a pull.",
)
@click.option(
    "--packages",
    "packages_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Directory of wheels, sdists and npm tarballs that dependencies are installed from at deploy time, "
    "offline.  [default: none: a function asking for dependencies is refused]",
)
@click.option(
    "--max-deps-size",
    default=f"{Config.max_deps_bytes // 1024**2}m",
    callback=parse_byte_size,
    metavar="SIZE",
    help="Most one function's installed dependencies may take (k, m, g, t: powers of 1024).",
)
@click.option(
    "--build-timeout",
    default=Config.build_timeout_seconds,
    type=click.FloatRange(min=1),
    help="Seconds a deploy-time step (a check, an install) may run in its container.",
)
@click.version_option(package_name="faasd")
def main(
    state_dir: Path,
    run_dir: Path,
    socket_path: Path | None,
    ip_range: ipaddress.IPv4Network,
    runc_binary: str,
    port: int,
    timeout: float,
    start_timeout: float,
    drain_timeout: float,
    warm: int,
    sandbox: str,
    warm_idle: float,
    max_containers: int | None,
    max_containers_per_function: int | None,
    queue_size: int | None,
    queue_timeout: float,
    listen: TcpAddress | None,
    gateway: TcpAddress | None,
    gateway_domain: str,
    log_max_bytes: int,
    log_max_files: int,
    log_file: Path | None,
    max_image_size: int,
    max_image_entries: int,
    keep_versions: int,
    insecure_registries: frozenset[str],
    registry_timeout: float,
    packages_dir: Path | None,
    max_deps_size: int,
    build_timeout: float,
) -> None:
    """Run every TCP connection to a function in a fresh runc container.

    \b
    Example:
      sudo faasd --state-dir /var/lib/faasd --ip-range 127.10.0.0/16
      sudo faasd --listen 127.0.0.1:8080
      faas --host http://127.0.0.1:8080 --token "$(sudo cat /var/lib/faasd/api.token)" list
    Every option can also be set as FAASD_<OPTION>, e.g. FAASD_STATE_DIR.
    """
    config = Config(
        state_dir=state_dir.absolute(),
        run_dir=run_dir.absolute(),
        socket_path=(socket_path or run_dir / "faasd.sock").absolute(),
        ip_range=ip_range,
        runc_binary=runc_binary,
        port=port,
        limits=Limits(timeout_seconds=timeout, warm=warm, sandbox=sandbox),
        warm_idle_seconds=warm_idle,
        start_timeout_seconds=start_timeout,
        drain_seconds=drain_timeout,
        admission=AdmissionLimits.derive(max_containers, max_containers_per_function, queue_size, queue_timeout),
        listen=listen,
        gateway=gateway,
        gateway_domain=gateway_domain,
        logs=LogLimits(max_file_bytes=log_max_bytes, max_files=log_max_files),
        log_file=log_file.absolute() if log_file else None,
        max_image_bytes=max_image_size,
        max_image_entries=max_image_entries,
        keep_versions=keep_versions,
        insecure_registries=insecure_registries,
        registry_timeout_seconds=registry_timeout,
        packages_dir=packages_dir.absolute() if packages_dir else None,
        max_deps_bytes=max_deps_size,
        build_timeout_seconds=build_timeout,
    )
    os.umask(PRIVATE_UMASK)
    sys.exit(daemon.run(config))
