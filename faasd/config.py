"""Settings of the daemon: one frozen ``Config`` built once from the command line (``FAASD_*``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from faasd.admission import AdmissionLimits
from faasd.limits import Limits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Container uids and gids 0..USERNS_IDS-1 map to host ids userns_base..userns_base+USERNS_IDS-1.
USERNS_IDS = 65536


@dataclass(frozen=True)
class TcpAddress:
    """Where the control API also listens over TCP (``--listen HOST:PORT``)."""

    host: IPAddress
    port: int

    @classmethod
    def parse(cls, text: str) -> TcpAddress:
        """``127.0.0.1:8080`` or ``[::1]:8080``; raises ``ValueError`` with the accepted forms."""
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
        if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: give HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:8080")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: the host must be an IP address, e.g. 127.0.0.1:8080") from None
        return cls(address, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.host.version == 6 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LogLimits:
    """How much of each function's container output is kept, and the bounds on its way to disk."""

    max_file_bytes: int = 10 * 1024 * 1024  # ``current`` rotates before a write would pass this
    max_files: int = 3  # ``current`` and the rotated files together
    max_line_bytes: int = 16 * 1024  # a longer line is cut here and the rest of it dropped
    max_buffered_bytes: int = 4 * 1024 * 1024  # output not yet on disk; beyond it lines are dropped


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs to know, read once at start-up and passed down."""

    state_dir: Path = Path("/var/lib/faasd")
    run_dir: Path = Path("/run/faasd")
    socket_path: Path = Path("/run/faasd/faasd.sock")
    ip_range: ipaddress.IPv4Network = ipaddress.IPv4Network("127.10.0.0/16")
    runc_binary: str = "runc"
    port: int = 80
    limits: Limits = field(default_factory=Limits)  # for functions deployed without their own
    logs: LogLimits = field(default_factory=LogLimits)
    log_file: Path | None = None  # the daemon's own log, rotated; None: stderr (journald under systemd)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits.derive)
    gateway: TcpAddress | None = None  # one port for every function, routed by Host header
    gateway_domain: str = "localhost"  # NAME.<domain> reaches function NAME through the gateway
    start_timeout_seconds: float = 10.0
    drain_seconds: float = 10.0
    warm_idle_seconds: float = 60.0  # an idle function's warm containers are stopped after this
    max_upload_bytes: int = 4 * 1024**3
    max_image_bytes: int = 8 * 1024**3  # an image's layers, uncompressed, all together
    max_image_entries: int = 1_000_000  # entries (files, dirs, links, whiteouts) across its layers
    userns_base: int = 2_000_000_000  # host id of container root; rootfs files are owned by shifted ids
    keep_versions: int = 3
    listen: TcpAddress | None = None
    # Source functions: the runtime wrappers faasd lays into runtimes (handlers/runtimes/<language>/),
    # the most source one deploy may bring, and how long a deploy-time step (a check) may run.
    wrappers_dir: Path = Path(__file__).resolve().parent.parent / "handlers"
    max_source_bytes: int = 1024 * 1024
    build_timeout_seconds: float = 120.0
    # Dependencies installed at deploy time come from this directory alone (wheels, sdists...), bound
    # read-only into the build's container, which has no network; None: no function may ask for any.
    packages_dir: Path | None = None
    max_deps_bytes: int = 256 * 1024 * 1024  # what one build may install
    insecure_registries: frozenset[str] = frozenset()  # host:port pulled from over plain HTTP
    registry_timeout_seconds: float = 30.0  # to connect to a registry, and between two reads

    @property
    def database_path(self) -> Path:
        return self.state_dir / "faasd.db"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def uploads_dir(self) -> Path:
        """Uploads land here, on the same filesystem as the images, so a full disk shows early."""
        return self.state_dir / "uploads"

    @property
    def runtimes_dir(self) -> Path:
        return self.state_dir / "runtimes"

    @property
    def token_path(self) -> Path:
        """The bearer token the TCP listener asks for; readable by root only."""
        return self.state_dir / "api.token"

    @property
    def logins_path(self) -> Path:
        """Credentials ``faas login`` stored, by registry; readable by root only."""
        return self.state_dir / "registry-logins.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "faasd.lock"

    @property
    def bundles_dir(self) -> Path:
        return self.run_dir / "bundles"

    @property
    def runc_root(self) -> Path:
        """runc's state directory: faasd's containers live apart from anyone else's."""
        return self.run_dir / "runc"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"
