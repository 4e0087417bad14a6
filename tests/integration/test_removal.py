"""Trees of any depth: ``faas rm`` removes them, and a start-up sweep removes them or, for what no
one can remove, logs it and serves the functions it has."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from faasd.images.tree import remove_tree
from tests.integration.conftest import Daemon, daemon_range, http_get, new_daemon
from tests.unit.images.layers import make_deep_tree

# Deeper than Python's recursion limit: what an older faasd, without a depth limit, unpacked.
DEPTH = 1500


def layer_dirs(daemon: Daemon) -> list[Path]:
    return list((daemon.state_dir / "layers" / "sha256").iterdir())


def test_rm_removes_a_layer_of_any_depth(
    make_daemon: Callable[..., Daemon], busybox_image: Callable[..., Path]
) -> None:
    daemon = make_daemon(daemon_range(40))
    daemon.deploy("deep", busybox_image())
    [layer] = layer_dirs(daemon)
    make_deep_tree(layer / "usr", DEPTH)
    result = daemon.faas("rm", "deep")
    assert result.returncode == 0, result.stderr
    assert os.listdir(daemon.state_dir / "layers") == ["sha256"] and layer_dirs(daemon) == []


def test_start_up_removes_deep_leftovers_and_logs_what_it_cannot_remove(
    daemon_roots: Path, busybox_image: Callable[..., Path]
) -> None:
    daemon = new_daemon(daemon_roots, daemon_range(41))
    daemon.start()
    try:
        ip = daemon.deploy("keeper", busybox_image())
    finally:
        daemon.stop()
    deep = daemon.state_dir / "layers" / ".tmp-gone-deep"
    deep.mkdir()
    make_deep_tree(deep, DEPTH)
    stuck = [daemon.state_dir / "layers" / ".tmp-gone-stuck", daemon.state_dir / "logs" / "removed-function"]
    for directory in stuck:
        directory.mkdir(parents=True)
        (directory / "immutable").write_text("x")
        subprocess.run(["chattr", "+i", str(directory / "immutable")], check=True)
    try:
        daemon.start()
        assert http_get(ip) == (200, b"hello from C\n")
        assert not deep.exists()
        for directory in stuck:
            assert directory.exists()
            assert f"cannot remove path={directory} error=Operation not permitted" in daemon.log.read_text()
    finally:
        for directory in stuck:
            subprocess.run(["chattr", "-i", str(directory / "immutable")], check=True)
        remove_tree(deep)  # pytest's own clean-up recurses
        if daemon.proc is not None:
            daemon.stop()
