"""The seccomp filter of every container: the system calls a function never needs, refused.

Docker's default profile allows a list and refuses the rest; this one refuses Docker's
refused set and allows the rest, so it reads in one screen and new harmless system calls
keep working. What it refuses, and why:

- mounting and changing the filesystem tree: mount, umount2, pivot_root, the new mount API;
- new namespaces from inside: unshare and setns outright, clone with CLONE_NEWUSER (a user
  namespace would hand the container a fresh set of capabilities to attack the kernel with);
- the kernel's own state: modules, kexec, reboot, swap, clocks, quotas, accounting, syslog;
- kernel attack surface that functions do not use: bpf, perf_event_open, userfaultfd,
  io_uring, keyrings (keyctl, add_key, request_key), open_by_handle_at (the "shocker" escape);
- other processes' memory: ptrace, process_vm_readv/writev, kcmp;
- AF_VSOCK sockets: vsock is not network-namespaced, so it would reach the hypervisor and
  whatever listens on the host's vsock, past the container's lo-only network. socketcall, the
  32-bit x86 multiplexer, is refused with it: it passes socket()'s family in memory, out of a
  filter's reach (so a 32-bit x86 program gets no sockets at all).

Refused calls fail with EPERM; clone3 fails with ENOSYS so libc falls back to clone, whose
flags the filter can read (clone3 passes them in memory, out of a filter's reach).

Fork mode (``--sandbox fork``) adds two filters. A template's container gets this one with two
calls opened as narrowly as their arguments allow: ``unshare`` of exactly ``FORK_NAMESPACES``
and ``mount`` with no flag outside ``FORK_MOUNT_FLAGS``, what its children need to build their
sandboxes (the file system type and paths are pointers, out of a filter's reach). Each child
then stacks ``fork_child_profile``: this filter again, plus ``clone`` with any namespace flag.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_NEWCGROUP = 0x02000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
    CLONE_NEWTIME,
    CLONE_NEWCGROUP,
)
# What a template's child unshares, all at once (handlers/faas_handler.py, FORK_NAMESPACES).
FORK_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID
# The mount(2) flags its child uses: MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC (tmpfs mounts),
# MS_REMOUNT | MS_BIND (/dev made read-only), MS_BIND and MS_MOVE (its /proc); no MS_REC, no
# propagation change.
FORK_MOUNT_FLAGS = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x1000 | 0x2000
OPENED_FOR_TEMPLATES = ("mount", "unshare")
AF_VSOCK = 40  # linux/socket.h

REFUSED = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "socketcall",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
)

# The native architecture and the compat ones its kernel also accepts system calls from:
# a filter that left one out would let a 32-bit call through.
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def seccomp_profile(machine: str | None = None) -> dict[str, Any]:
    """The ``linux.seccomp`` section of config.json (runtime-spec config-linux.md)."""
    machine = machine or platform.machine()
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES.get(machine, []),
        "syscalls": [
            {"names": list(REFUSED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
                # clone's flags are its first argument on the architectures above (not on s390).
                "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
                "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }


def _refuse(name: str, index: int, mask: int, value: int) -> dict[str, Any]:
    """A rule refusing ``name`` when its argument ``index`` masked by ``mask`` equals ``value``."""
    condition = {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}
    return {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM, "args": [condition]}


def template_profile(machine: str | None = None) -> dict[str, Any]:
    """The filter of a template's container: every container's, with ``unshare`` allowed for
    ``FORK_NAMESPACES`` alone and ``mount`` for ``FORK_MOUNT_FLAGS`` alone.

    Rules refusing one flag each: runc adds conditions on the same argument as rules of their
    own, so they refuse a call when any of them matches.
    """
    profile = seccomp_profile(machine)
    for rule in profile["syscalls"]:
        if not rule.get("args"):
            rule["names"] = [name for name in rule["names"] if name not in OPENED_FOR_TEMPLATES]
    unshare = {"index": 0, "value": FORK_NAMESPACES, "op": "SCMP_CMP_NE"}
    profile["syscalls"].append(
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM, "args": [unshare]}
    )
    # mount's flags are its fourth argument; one rule per flag bit outside the allowed ones.
    profile["syscalls"].extend(
        _refuse("mount", 3, 1 << bit, 1 << bit) for bit in range(64) if not FORK_MOUNT_FLAGS >> bit & 1
    )
    return profile


def fork_child_profile(machine: str | None = None) -> dict[str, Any]:
    """The filter a template's child adds to its container's: every container's (which the
    template's loosens), plus ``clone`` with any namespace flag."""
    profile = seccomp_profile(machine)
    profile["syscalls"].extend(_refuse("clone", 0, flag, flag) for flag in NAMESPACE_FLAGS)
    return profile
