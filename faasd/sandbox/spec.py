"""The OCI runtime configuration of one container: pure, so every default is testable.

Defaults follow runtime-spec config.md and config-linux.md, in the spirit of ``runc spec``:
read-only rootfs, fresh namespaces (network included: the container sees only its own lo;
user: its root is an unprivileged host uid), no capabilities, ``noNewPrivileges``, a seccomp
filter, masked /proc paths, a size-limited /tmp and /dev/shm (read-only for a --tmp-size of 0),
a read-only /dev, cgroup limits. docs/security.md lists each
one with the test that attacks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.channel import CHANNEL_ENV, uses_channel
from faasd.config import USERNS_IDS
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.sandbox.seccomp import seccomp_profile

OCI_VERSION = "1.0.2"
CONTROL_SOCKET = "/control.sock"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
# /dev/shm is a second writable tmpfs: never larger than /tmp, and at most this.
SHM_BYTES = 64 * 1024 * 1024
# /dev holds only the nodes and links runc makes; runc remounts it read-only once they are made.
DEV_BYTES = 64 * 1024
# The smallest size a tmpfs takes; a read-only one needs no more (size=0 would mean no limit).
READ_ONLY_TMPFS = ("ro", "size=4k")

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


# Where each container's bundle holds the listening end of its /control.sock. runc resolves a
# relative bind source against the bundle, so the path is the same in every config.json.
CONTROL_SOCKET_IN_BUNDLE = "control.sock"
# Stands for the container id in a serialised template; ids are [a-z0-9-], never this.
ID_PLACEHOLDER = "@@container-id@@"


@dataclass(frozen=True)
class SpecTemplate:
    """One version's ``config.json``, serialised once: a container only adds its id."""

    head: bytes
    tail: bytes

    @classmethod
    def of(cls, spec: dict[str, Any]) -> SpecTemplate:
        head, placeholder, tail = json.dumps(spec).partition(ID_PLACEHOLDER)
        if not placeholder:
            raise ValueError("the spec has no place for the container id")
        return cls(head.encode(), tail.encode())

    def render(self, container_id: str) -> bytes:
        return self.head + container_id.encode() + self.tail


def process_args(image: ImageConfig) -> list[str]:
    """The command line the image asks for: Entrypoint followed by Cmd, as Docker runs it."""
    return [*image.entrypoint, *image.cmd]


def process_env(image: ImageConfig) -> list[str]:
    """The image's environment, with a default PATH when the image sets none, and Node's
    channel fd when the image takes its connections over one (``faasd.channel``)."""
    env = list(image.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    if uses_channel(image.env):
        env.append(CHANNEL_ENV)
    return env


def control_mounts(image: ImageConfig) -> list[dict[str, Any]]:
    """The bind of ``/control.sock``, which a handler on Node's channel has no use for."""
    if uses_channel(image.env):
        return []
    return [
        {
            "destination": CONTROL_SOCKET,
            "type": "bind",
            "source": CONTROL_SOCKET_IN_BUNDLE,
            "options": ["bind", "nosuid", "nodev", "noexec"],
        }
    ]


def scratch_options(size: int) -> list[str]:
    """A writable tmpfs's size option, or read-only for a size of 0 (tmpfs reads 0 as unlimited)."""
    return list(READ_ONLY_TMPFS) if size == 0 else [f"size={size}"]


def build_spec(
    image: ImageConfig,
    uid: int,
    gid: int,
    limits: Limits,
    rootfs: Path,
    hostname: str,
    userns_base: int,
    container_id: str = ID_PLACEHOLDER,
    seccomp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` for ``container_id`` running ``image`` from ``rootfs`` as ``uid:gid``
    under ``limits``; left without an id, the template every container of a version shares.
    ``seccomp`` replaces the default filter (a fork-mode template's, ``seccomp.template_profile``).

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
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", f"size={DEV_BYTES}", "ro"],
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
                "options": [
                    "nosuid",
                    "noexec",
                    "nodev",
                    "mode=1777",
                    *scratch_options(min(limits.tmp_bytes, SHM_BYTES)),
                ],
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
                "options": ["nosuid", "nodev", "mode=1777", *scratch_options(limits.tmp_bytes)],
            },
            *control_mounts(image),
        ],
        "linux": {
            "namespaces": [{"type": ns} for ns in NAMESPACES],
            "uidMappings": id_map,
            "gidMappings": id_map,
            "cgroupsPath": f"/faasd/{container_id}",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": limits.memory_bytes},
                "cpu": {"quota": int(limits.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US},
                "pids": {"limit": limits.pids},
            },
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp or seccomp_profile(),
        },
    }
