"""An OCI seccomp profile compiled to classic BPF, for a process to install on itself.

runc compiles a container's filter with libseccomp; a template's child installs its own with
prctl(PR_SET_SECCOMP), from the bytes this module makes with the same library and the same
reading of the profile (runtime-spec config-linux.md; conditions on one argument become rules
of their own, as runc adds them), so the child's filter means what a container's would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from typing import Any

from faasd.errors import RuntimeFailure

ACTIONS = {"SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_KILL": 0}
OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: a name no architecture knows


class ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise RuntimeFailure(f"fork mode needs libseccomp (runc's own dependency): {exc}") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    )
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


def _action(rule: dict[str, Any]) -> int:
    action = ACTIONS[rule["action"]]
    if rule["action"] == "SCMP_ACT_ERRNO":
        action |= rule.get("errnoRet", errno.EPERM) & 0xFFFF
    return action


def condition_sets(args: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The conditions of one rule as runc adds them: all together, or, when two of them test
    the same argument, each in a rule of its own."""
    indexes = [arg["index"] for arg in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [[arg] for arg in args]


def compile_profile(profile: dict[str, Any]) -> bytes:
    """The BPF program (``struct sock_filter`` array) of an OCI ``linux.seccomp`` section."""
    lib = _libseccomp()
    ctx = lib.seccomp_init(ACTIONS[profile["defaultAction"]])
    if not ctx:
        raise RuntimeFailure("seccomp_init failed")
    try:
        for arch in profile.get("architectures", []):
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            result = lib.seccomp_arch_add(ctx, token)
            if result not in (0, -errno.EEXIST):  # EEXIST: the native one, already in
                raise RuntimeFailure(f"seccomp_arch_add {arch}: {os.strerror(-result)}")
        for rule in profile["syscalls"]:
            for name in rule["names"]:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number == NR_SCMP_ERROR:
                    continue  # unknown on every architecture: nothing to filter
                for conditions in condition_sets(rule.get("args") or []):
                    _add_rule(lib, ctx, _action(rule), number, conditions)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _add_rule(lib: ctypes.CDLL, ctx: int, action: int, number: int, conditions: list[dict[str, Any]]) -> None:
    array = (ArgCmp * max(len(conditions), 1))(
        *(ArgCmp(c["index"], OPERATORS[c["op"]], c["value"], c.get("valueTwo", 0)) for c in conditions)
    )
    result = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
    if result != 0:
        raise RuntimeFailure(f"seccomp_rule_add syscall {number}: {os.strerror(-result)}")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("seccomp-bpf")
    try:
        result = lib.seccomp_export_bpf(ctx, fd)
        if result != 0:
            raise RuntimeFailure(f"seccomp_export_bpf: {os.strerror(-result)}")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)
