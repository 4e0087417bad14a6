"""The OCI runtime configuration of one container: pure, so every default is testable.

Defaults follow runtime-spec config.md and config-linux.md, in the spirit of ``runc spec``:
read-only rootfs, fresh namespaces (network included: the container sees only its own lo;
user: its root is an unprivileged host uid), no capabilities, ``noNewPrivileges``, a seccomp
filter, masked /proc paths, a size-limited /tmp, cgroup limits. docs/security.md lists each
one with the test that attacks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.config import USERNS_IDS
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.sandbox.seccomp import seccomp_profile

OCI_VERSION = "1.0.2"
CONTROL_SOCKET = "/control.sock"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000

# The mount points runc needs in the rootfs, with their modes; they are made at import time
# because the rootfs is shared read-only by every container of a version. The mode matters:
# runc gives a tmpfs the mode of the directory it covers, so /tmp must be 1777 here.
MOUNT_POINTS = {"proc": 0o555, "dev": 0o755, "sys": 0o555, "tmp": 0o1777}

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
NAMESPACES = ("pid", "ipc", "uts", "mount", "network", "cgroup", "user")


@dataclass(frozen=True)
class Container:
    """What differs between two containers of the same function version."""

    id: str
    rootfs: Path
    control_socket: Path
    hostname: str


def process_args(image: ImageConfig) -> list[str]:
    """The command line the image asks for: Entrypoint followed by Cmd, as Docker runs it."""
    return [*image.entrypoint, *image.cmd]


def process_env(image: ImageConfig) -> list[str]:
    """The image's environment, with a default PATH when the image sets none."""
    env = list(image.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    return env


def build_spec(
    image: ImageConfig, uid: int, gid: int, limits: Limits, container: Container, userns_base: int
) -> dict[str, Any]:
    """The ``config.json`` for ``container`` running ``image`` as ``uid:gid`` under ``limits``.

    The rootfs must be owned by the shifted ids (the image store writes it so).
    """
    id_map = [{"containerID": 0, "hostID": userns_base, "size": USERNS_IDS}]
    no_capabilities: dict[str, list[str]] = {
        "bounding": [],
        "effective": [],
        "inheritable": [],
        "permitted": [],
        "ambient": [],
    }
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": process_args(image),
            "env": process_env(image),
            "cwd": image.working_dir or "/",
            "capabilities": no_capabilities,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(container.rootfs), "readonly": True},
        "hostname": container.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", f"size={limits.tmp_bytes}"],
            },
            {
                "destination": CONTROL_SOCKET,
                "type": "bind",
                "source": str(container.control_socket),
                "options": ["bind", "nosuid", "nodev", "noexec"],
            },
        ],
        "linux": {
            "namespaces": [{"type": ns} for ns in NAMESPACES],
            "uidMappings": id_map,
            "gidMappings": id_map,
            "cgroupsPath": f"/faasd/{container.id}",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": limits.memory_bytes},
                "cpu": {"quota": int(limits.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US},
                "pids": {"limit": limits.pids},
            },
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp_profile(),
        },
    }
