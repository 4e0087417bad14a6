"""Settings of the daemon: one frozen ``Config`` built once from the command line (``FAASD_*``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container; the defaults apply to every function for now."""

    memory_bytes: int = 256 * 1024 * 1024
    cpus: float = 1.0
    pids: int = 128
    timeout_seconds: float = 30.0
    tmp_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs to know, read once at start-up and passed down."""

    state_dir: Path = Path("/var/lib/faasd")
    run_dir: Path = Path("/run/faasd")
    socket_path: Path = Path("/run/faasd/faasd.sock")
    ip_range: ipaddress.IPv4Network = ipaddress.IPv4Network("127.10.0.0/16")
    runc_binary: str = "runc"
    port: int = 80
    limits: Limits = field(default_factory=Limits)
    start_timeout_seconds: float = 10.0
    drain_seconds: float = 10.0
    max_upload_bytes: int = 4 * 1024**3
    max_image_bytes: int = 8 * 1024**3
    keep_versions: int = 3

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
