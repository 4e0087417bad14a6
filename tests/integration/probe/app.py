"""A handler that attacks its own sandbox and reports, as JSON, what the kernel said.

Each path tries one thing a hostile function would; the test decides what must have failed.
Errors are reported by name (``EPERM``), successes as ``"ok"``. Runs as the container's root.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from faas_handler import serve

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17
# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYSCALLS = {
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "reboot": 169,
    "init_module": 175,
    "delete_module": 176,
    "kexec_load": 246,
    "add_key": 248,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "open_by_handle_at": 304,
    "setns": 308,
    "finit_module": 313,
    "bpf": 321,
    "ptrace": 101,
    "clone": 56,
    "clone3": 435,
}
# Arguments that are harmless whatever happens, yet make the call succeed where nothing refuses it.
ATTEMPTS: dict[str, tuple[Any, ...]] = {
    "mount": (b"none", b"/tmp", b"tmpfs", 0, None),
    "umount2": (b"/tmp", 0),
    "swapon": (b"/tmp/swap", 0),
    "reboot": (0xFEE1DEAD, 672274793, 0, None),  # LINUX_REBOOT_CMD_CAD_OFF
    "init_module": (None, 0, b""),
    "delete_module": (b"probe", 0),
    "kexec_load": (0, 0, None, 0),
    "add_key": (b"user", b"probe", b"x", 1, -2),  # KEY_SPEC_PROCESS_KEYRING
    "keyctl": (0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "unshare": (CLONE_NEWUSER,),
    "perf_event_open": (None, 0, -1, -1, 0),
    "open_by_handle_at": (-100, None, 0),
    "setns": (-1, CLONE_NEWUSER),
    "finit_module": (-1, b"", 0),
    "bpf": (0, None, 0),
    "ptrace": (0, 0, None, None),  # PTRACE_TRACEME
    "clone": (CLONE_NEWUSER | SIGCHLD, None, None, None, None),
    "clone3": (None, 0),
}


def attempt(name: str) -> str:
    """Make one system call; "ok" if the kernel let it through, else its errno's name."""
    args = [ctypes.c_void_p(a) if a is None else a for a in ATTEMPTS[name]]
    result = LIBC.syscall(SYSCALLS[name], *args)
    if result == 0 and name == "clone":
        os._exit(0)  # the child of a clone that should never have happened
    if result >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def outcome(action: Callable[[], Any]) -> Any:
    """What ``action`` returned ("ok" for nothing), or the name of the errno it failed with."""
    try:
        value = action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok" if value is None else value


def status_fields() -> dict[str, str]:
    with open("/proc/self/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def identity(_: dict[str, list[str]]) -> dict[str, Any]:
    fields = status_fields()
    with open("/proc/self/uid_map") as uid_map:
        mapping = uid_map.read().split()
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "uid_map": mapping,
        "caps": {k: fields[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": fields["NoNewPrivs"],
        "seccomp": fields["Seccomp"],
        "rootfs_read": outcome(lambda: read_size("/etc/passwd")),
    }


def syscalls(_: dict[str, list[str]]) -> dict[str, str]:
    return {name: attempt(name) for name in ATTEMPTS}


def descriptors(_: dict[str, list[str]]) -> dict[str, str]:
    """Every open fd and what it points at (minus the ones listing them opened and closed)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[name] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue
    return found


def connect_tcp(target: str) -> None:
    host, port = target.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=2).close()


def connect_unix(path: str) -> None:
    """Connect to a unix socket path, or to an abstract one written ``@name``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect("\0" + path[1:] if path.startswith("@") else path)


def connect(query: dict[str, list[str]]) -> dict[str, Any]:
    results = {target: outcome(lambda t=target: connect_tcp(t)) for target in query.get("tcp", [])}
    results.update({path: outcome(lambda p=path: connect_unix(p)) for path in query.get("unix", [])})
    return results


def interfaces(_: dict[str, list[str]]) -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def read_size(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read(4096))


def write_byte(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"1")


def files(query: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "read": {path: outcome(lambda p=path: read_size(p)) for path in query.get("read", [])},
        "write": {path: outcome(lambda p=path: write_byte(p)) for path in query.get("write", [])},
    }


def devices(_: dict[str, list[str]]) -> dict[str, str]:
    found = {}
    for name in os.listdir("/dev"):
        mode = os.lstat(f"/dev/{name}").st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            found[name] = "block" if stat.S_ISBLK(mode) else "char"
    return found


def vsock(_: dict[str, list[str]]) -> Any:
    """A vsock socket: not network-namespaced, it would reach past the container's lo."""
    return outcome(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close())


def control(_: dict[str, list[str]]) -> Any:
    """A second connection to the control socket: the daemon hands over one client, once."""
    return outcome(lambda: connect_unix("/control.sock"))


def memory(_: dict[str, list[str]]) -> None:
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))


def fork(_: dict[str, list[str]]) -> dict[str, Any]:
    children = 0
    try:
        while children < 10_000:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"children": children, "error": errno.errorcode.get(exc.errno or 0)}
    return {"children": children, "error": None}


def spin(_: dict[str, list[str]]) -> None:
    while True:
        pass


def nap(query: dict[str, list[str]]) -> dict[str, float]:
    """Answer after ``s`` seconds: a request that is running, not starting, for that long."""
    seconds = float(query.get("s", ["1"])[0])
    time.sleep(seconds)
    return {"slept": seconds}


def tmp(query: dict[str, list[str]]) -> dict[str, Any]:
    """Fill a writable tmpfs (``dir``, /tmp by default) until the kernel says no."""
    written = 0
    try:
        with open(f"{query.get('dir', ['/tmp'])[0]}/fill", "wb") as f:
            while written < 1 << 30:
                f.write(b"\0" * 65536)
                f.flush()
                written += 65536
    except OSError as exc:
        return {"written": written, "error": errno.errorcode.get(exc.errno or 0)}
    return {"written": written, "error": None}


def leave(_: dict[str, list[str]]) -> None:
    """Exit without a word, as a crashing handler would."""
    os._exit(3)


def linger(query: dict[str, list[str]]) -> None:
    """Set SO_LINGER (on, ``s`` seconds) on the client's socket, fill its send buffer while the
    client does not read, and exit: the socket's last close is then the daemon's."""
    seconds = int(query.get("s", ["30"])[0])
    for name in os.listdir("/proc/self/fd"):
        try:
            client = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if client.family == socket.AF_INET and client.type == socket.SOCK_STREAM:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, seconds))
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    client.send(b"x" * 65536)
    os._exit(0)


def cpu(_: dict[str, list[str]]) -> dict[str, float]:
    """Busy threads for one wall-clock second: the CPU time they get shows the CPU limit."""
    stop = time.monotonic() + 1.0

    def burn() -> None:
        while time.monotonic() < stop:
            pass

    before = resource.getrusage(resource.RUSAGE_SELF)
    workers = [threading.Thread(target=burn) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


# Made once per process: two answers with the same token came from the same container.
BOOT = os.urandom(8).hex()


def visit(_: dict[str, list[str]], metadata: dict[str, Any]) -> dict[str, Any]:
    """This container's token, the request's id, and how many connections it has served."""
    with open("/tmp/visits", "a+") as visits:
        visits.write(f"{metadata.get('id')}\n")
        visits.seek(0)
        count = len(visits.read().split())
    return {"boot": BOOT, "id": metadata.get("id"), "visits": count, "more": metadata.get("more", False)}


# What one connection leaves behind for the next to look for: in a fresh sandbox, none of it is there.
TRACES = {"abstract": "\0faasd-probe-trace", "port": 7777, "files": ["/tmp/trace", "/dev/shm/trace"], "ipc_key": 0x5EED}
IPC_CREAT = 0o1000
HELD: list[socket.socket] = []


def leave_traces(query: dict[str, list[str]]) -> dict[str, Any]:
    """Leave a trace of every kind, then stay ``hold`` seconds, so a concurrent connection may look."""
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(TRACES["abstract"])
    unix.listen()
    tcp = socket.create_server(("127.0.0.1", TRACES["port"]))
    HELD.extend((unix, tcp))
    for path in TRACES["files"]:
        write_byte(path)
    shm = LIBC.shmget(TRACES["ipc_key"], 4096, IPC_CREAT | 0o666)
    time.sleep(float(query.get("hold", ["0"])[0]))
    return {"sysv_shm": shm >= 0}


def look(_: dict[str, list[str]]) -> dict[str, Any]:
    """What of another connection's traces, and of other processes, this one can reach."""
    shm = LIBC.shmget(TRACES["ipc_key"], 0, 0)
    return {
        "abstract": outcome(lambda: connect_unix("@" + TRACES["abstract"][1:])),
        "port": outcome(lambda: connect_tcp(f"127.0.0.1:{TRACES['port']}")),
        "files": {path: os.path.exists(path) for path in TRACES["files"]},
        "sysv_shm": "found" if shm >= 0 else errno.errorcode.get(ctypes.get_errno()),
        "signal_all": outcome(lambda: os.kill(-1, 0)),  # every process this one could signal
        "proc": sorted(os.listdir("/proc")),
    }


REMEMBERED: dict[str, str | None] = {"value": None}


def remember(query: dict[str, list[str]]) -> dict[str, Any]:
    """Set a module global; answer what it was before, and this process's boot token."""
    previous, REMEMBERED["value"] = REMEMBERED["value"], query["value"][0]
    return {"previous": previous, "boot": BOOT}


def crash(_: dict[str, list[str]]) -> None:
    """A segmentation fault, as a broken C extension would cause."""
    ctypes.string_at(0)


PROBES: dict[str, Callable[[dict[str, list[str]]], Any]] = {
    "/identity": identity,
    "/syscalls": syscalls,
    "/fds": descriptors,
    "/connect": connect,
    "/interfaces": interfaces,
    "/files": files,
    "/devices": devices,
    "/control": control,
    "/vsock": vsock,
    "/memory": memory,
    "/fork": fork,
    "/spin": spin,
    "/sleep": nap,
    "/tmp": tmp,
    "/cpu": cpu,
    "/exit": leave,
    "/linger": linger,
    "/leave": leave_traces,
    "/look": look,
    "/remember": remember,
    "/crash": crash,
}
WITH_METADATA: dict[str, Callable[[dict[str, list[str]], dict[str, Any]], Any]] = {"/visit": visit}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, query = environ["PATH_INFO"], parse_qs(environ["QUERY_STRING"])
    if path in WITH_METADATA:
        result = WITH_METADATA[path](query, environ["faas.metadata"])
    elif path in PROBES:
        result = PROBES[path](query)
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such probe\n"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(result).encode() + b"\n"]


if __name__ == "__main__":
    serve(app)
