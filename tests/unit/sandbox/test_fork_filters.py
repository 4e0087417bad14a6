"""The seccomp filters of fork mode: the template's, opened exactly as far as a fork needs, and
the child's, compiled to BPF and installed in a real process, where the kernel enforces it."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest

from faasd.sandbox.bpf import compile_profile, condition_sets
from faasd.sandbox.seccomp import (
    FORK_MOUNT_FLAGS,
    FORK_NAMESPACES,
    NAMESPACE_FLAGS,
    OPENED_FOR_TEMPLATES,
    REFUSED,
    fork_child_profile,
    seccomp_profile,
    template_profile,
)
from tests.unit.handlers.harness import faas_handler


def plain_refusals(profile: dict) -> set[str]:
    """Calls refused whatever their arguments."""
    return {name for rule in profile["syscalls"] if not rule.get("args") for name in rule["names"]}


def conditional(profile: dict, name: str) -> list[list[dict]]:
    return [rule["args"] for rule in profile["syscalls"] if rule.get("args") and name in rule["names"]]


def test_the_template_filter_opens_only_unshare_and_mount() -> None:
    template = template_profile("x86_64")
    assert plain_refusals(template) == plain_refusals(seccomp_profile("x86_64")) - set(OPENED_FOR_TEMPLATES)
    assert set(REFUSED) - plain_refusals(template) == {"mount", "unshare"}
    # The container's conditional rules (clone with CLONE_NEWUSER, vsock...) all stay.
    assert all(rule in template["syscalls"] for rule in seccomp_profile("x86_64")["syscalls"] if rule.get("args"))


def test_unshare_is_allowed_for_the_one_set_of_namespaces_a_child_asks_for() -> None:
    assert conditional(template_profile(), "unshare") == [[{"index": 0, "value": FORK_NAMESPACES, "op": "SCMP_CMP_NE"}]]
    assert FORK_NAMESPACES == faas_handler.FORK_NAMESPACES, "the SDK unshares exactly what the filter allows"


def test_mount_is_refused_for_every_flag_a_child_does_not_use() -> None:
    refused_bits = {args[0]["value"] for args in conditional(template_profile(), "mount")}
    assert all(
        args[0]["index"] == 3 and args[0]["op"] == "SCMP_CMP_MASKED_EQ"
        for args in conditional(template_profile(), "mount")
    )
    assert refused_bits == {1 << bit for bit in range(64)} - {
        1 << bit for bit in range(64) if FORK_MOUNT_FLAGS >> bit & 1
    }
    ms_rec, ms_shared, ms_private = 0x4000, 1 << 20, 1 << 18
    assert {ms_rec, ms_shared, ms_private} <= refused_bits


def test_the_child_filter_is_the_containers_plus_clone_into_any_namespace() -> None:
    child = fork_child_profile()
    container = seccomp_profile()
    assert child["syscalls"][: len(container["syscalls"])] == container["syscalls"]
    flags = {args[0]["value"] for args in conditional(child, "clone")}
    assert flags == set(NAMESPACE_FLAGS)


def test_conditions_on_one_argument_become_rules_of_their_own_as_runc_adds_them() -> None:
    a, b = {"index": 3, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 3, "value": 2, "op": "SCMP_CMP_EQ"}
    other = {"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}
    assert condition_sets([a, b]) == [[a], [b]]
    assert condition_sets([a, other]) == [[a, other]]
    assert condition_sets([]) == [[]]


CHILD = """
import ctypes, os, sys
sys.path.insert(0, {handlers!r})
import faas_handler
libc = ctypes.CDLL(None, use_errno=True)
faas_handler._install_filter(libc, bytes.fromhex(sys.argv[1]))
results = {{}}
calls = {{"unshare": lambda: libc.unshare(0x10000000), "mount": lambda: libc.mount(b"x", b"/tmp", b"tmpfs", 0, None)}}
for name, call in calls.items():
    results[name] = call() == -1 and ctypes.get_errno()
pid = os.fork()
if pid == 0:
    os._exit(7)
results["fork"] = os.waitpid(pid, 0)[1] >> 8
status = open("/proc/self/status").read()
results["seccomp"] = "Seccomp:\\t2" in status and "NoNewPrivs:\\t1" in status
print(results)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")
def test_the_compiled_child_filter_is_enforced_by_the_kernel() -> None:
    """The SDK installs the daemon's BPF as a child does: namespaces and mounts refused (an
    unprivileged user namespace would be allowed without it), a plain fork still works."""
    bpf = compile_profile(fork_child_profile())
    assert bpf and len(bpf) % 8 == 0
    script = CHILD.format(handlers=str(faas_handler.__file__).rpartition("/")[0])
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), bpf.hex()], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str({"unshare": errno.EPERM, "mount": errno.EPERM, "fork": 7, "seccomp": True})
