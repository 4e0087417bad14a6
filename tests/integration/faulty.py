"""Tools of the fault tests: images that misbehave on purpose, and probes of the daemon's state."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from pathlib import Path

from tests.integration.conftest import Daemon
from tools.build_image import write_oci_archive

DEPLOYED = re.compile(r"Deployed (\S+) at (\S+) \(version (\d+)\)")


def deployed(result: subprocess.CompletedProcess[str]) -> tuple[str, str, int]:
    """The name, IP and version a successful ``faas new`` reports."""
    assert result.returncode == 0, result.stderr
    match = DEPLOYED.fullmatch(result.stdout.strip())
    assert match, result.stdout
    return match[1], match[2], int(match[3])


def busybox_variant(base: Path, out: Path, cmd: list[str], extra_layers: tuple[Path, ...] = ()) -> Path:
    """``base`` (a busybox image) with another Cmd and more layers on top, as a gzip OCI archive.

    Gzip keeps an upload of mostly zeros small, so its import, not its upload, meets a full disk.
    """
    with tarfile.open(base) as archive:
        (manifest,) = json.load(archive.extractfile("manifest.json"))
        config = json.load(archive.extractfile(manifest["Config"]))
        busybox = out.with_suffix(".busybox-layer.tar")
        busybox.write_bytes(archive.extractfile(manifest["Layers"][0]).read())
    config["config"]["Cmd"] = cmd
    write_oci_archive(out, [busybox, *extra_layers], {"config": config["config"]}, f"{out.stem}:latest")
    busybox.unlink()
    return out


def zeros_layer(out: Path, size: int, files: int = 1) -> Path:
    """A layer of ``files`` files of ``size`` zero bytes each, written from a sparse file."""
    source = out.with_suffix(".zeros")
    with open(source, "wb") as sparse:
        sparse.truncate(size)
    with tarfile.open(out, "w") as tar:
        for index in range(files):
            tar.add(source, arcname=f"zeros-{index}", recursive=False)
    source.unlink()
    return out


def api(daemon: Daemon, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, object]]:
    """One request to the control API on the daemon's unix socket; the status and the JSON body."""
    conn = http.client.HTTPConnection("localhost", timeout=120)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.connect(str(daemon.socket))
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def runc(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The real runc on the daemon's own state root."""
    return subprocess.run(
        ["runc", "--root", str(daemon.root / "run" / "runc"), *args], capture_output=True, text=True, timeout=30
    )


def containers(daemon: Daemon) -> dict[str, int]:
    """The daemon's runc containers, by id, with the host pid of each one's init process."""
    for _ in range(10):
        result = runc(daemon, "list", "--format", "json")
        # runc list fails when a container it listed is deleted before it reads its state: again.
        if result.returncode == 0 or "no such file or directory" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr
    return {c["id"]: c["pid"] for c in json.loads(result.stdout or "null") or []}


def bundles(daemon: Daemon) -> list[Path]:
    directory = daemon.root / "run" / "bundles"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def server_side_inode(client: socket.socket) -> int:
    """The inode of the socket at the other end of ``client`` (from /proc/net/tcp).

    It is 0 while the connection waits in the listener's queue: a socket gets its inode at accept.
    """
    peer_ip, peer_port = client.getpeername()
    own_ip, own_port = client.getsockname()

    def hex_address(ip: str, port: int) -> str:
        return f"{int.from_bytes(socket.inet_aton(ip), 'little'):08X}:{port:04X}"

    local, remote = hex_address(peer_ip, peer_port), hex_address(own_ip, own_port)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[9])
    raise AssertionError(f"no accepted socket for {own_ip}:{own_port} in /proc/net/tcp")


def holds_socket(pid: int, inode: int) -> bool:
    target = f"socket:[{inode}]"
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:  # the process or one of its fds went away while we looked
        return False


def wait_for_handler(daemon: Daemon, client: socket.socket, seconds: float = 10) -> str:
    """Wait until a container's init process holds ``client``'s connection; return its id."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        inode = server_side_inode(client)
        for container_id, pid in containers(daemon).items():
            if inode and pid and holds_socket(pid, inode):
                return container_id
        time.sleep(0.05)
    raise AssertionError("no handler took the connection")


def read_to_close(client: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails, as a hang, after ``seconds``."""
    chunks = []
    deadline = time.monotonic() + seconds
    while True:
        client.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = client.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks)
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {seconds} s") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP/1.1 response, or None when nothing came."""
    if not response:
        return None
    return int(response.split(b" ", 2)[1])
