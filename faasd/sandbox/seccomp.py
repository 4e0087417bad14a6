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
"""

from __future__ import annotations

import errno
import platform
from typing import Any

CLONE_NEWUSER = 0x10000000
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
