"""A function's Env is where its secrets are: another local user reads nothing faasd wrote.

While a container runs (its bundle exists), every file and directory under the daemon's state
and run dirs is tried as ``nobody``: none may be read or listed, and the secret shows nowhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Daemon, daemon_range, eventually
from tools.build_image import DEFAULT_PATH, write_docker_archive

SECRET = "SECRET=correct-horse-battery-staple"
# Run by the system's python3 as nobody (the test's own interpreter may sit where nobody cannot
# reach): every path it can open for reading, or list, and whether the secret was in it.
AS_NOBODY = """
import json, os, stat, sys
found = {}
for path in json.load(sys.stdin):
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.listdir(path)
            found[path] = False
        else:
            with open(path, "rb") as f:
                found[path] = sys.argv[1].encode() in f.read(1 << 20)
    except OSError:
        pass
print(json.dumps(found))
"""


def secret_image(busybox_image: Callable[..., Path], out: Path) -> Path:
    """The busybox test image, with a secret in its Env."""
    with tarfile.open(busybox_image()) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (out.parent / "layer.tar").write_bytes(tar.extractfile(manifest[0]["Layers"][0]).read())  # type: ignore[union-attr]
    write_docker_archive(
        out, [out.parent / "layer.tar"], {"config": {"Cmd": ["/bin/hello"], "Env": [DEFAULT_PATH, SECRET]}}, "s:1"
    )
    return out


def regular_paths(*roots: Path) -> list[str]:
    """Every directory and regular file below ``roots`` (sockets and links cannot hold a secret)."""
    found = []
    for root in roots:
        for parent, _, files in os.walk(root):
            found.append(parent)
            found += [os.path.join(parent, name) for name in files if os.path.isfile(os.path.join(parent, name))]
    return found


def test_another_local_user_reads_nothing_faasd_wrote(
    make_daemon: Callable[..., Daemon], busybox_image: Callable[..., Path], tmp_path: Path
) -> None:
    daemon = make_daemon(daemon_range(42))
    ip = daemon.deploy("secretive", secret_image(busybox_image, tmp_path / "secret.tar"))
    bundles = daemon.root / "run" / "bundles"
    with socket.create_connection((ip, 80), timeout=10):  # a container waits for the request
        assert eventually(lambda: any(bundles.iterdir())), "a container was started"
        paths = regular_paths(daemon.state_dir, daemon.root / "run")
        assert any(path.endswith("config.json") for path in paths) and any("faasd.db" in path for path in paths)
        readable = subprocess.run(
            ["/usr/bin/python3", "-c", AS_NOBODY, SECRET],
            input=json.dumps(paths),
            capture_output=True,
            text=True,
            user="nobody",
            group="nogroup",
            extra_groups=[],
            check=True,
        ).stdout
    assert json.loads(readable) == {}
