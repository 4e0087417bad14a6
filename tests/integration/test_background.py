"""faasd without systemd: packaging/faasd-background starts it with /etc/default/faasd's settings,
prints its PID and how to stop it, and stops it again (as the systemd unit does before it starts)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.integration.conftest import BIN, daemon_range

SCRIPT = Path(__file__).parents[2] / "packaging" / "faasd-background"
UNIT = Path(__file__).parents[2] / "packaging" / "faasd.service"


def background(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120)


def alive(pid: int) -> bool:
    """Running, not only unreaped: the started faasd's parent is whatever adopted it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_started_in_the_background_with_the_settings_file_and_stopped_by_pid(daemon_roots: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="faasd", dir=daemon_roots))
    root.chmod(0o711)
    settings = root / "default-faasd"
    settings.write_text(
        f"FAASD_STATE_DIR={root / 'state'}\nFAASD_RUN_DIR={root / 'run'}\nFAASD_IP_RANGE={daemon_range(72)}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAAS_", "FAASD_"))} | {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "FAASD_DEFAULTS": str(settings),
        "FAASD_PIDFILE": str(root / "faasd.pid"),
        "FAASD_LOG": str(root / "faasd.log"),
    }
    started = background("start", env)
    assert started.returncode == 0, started.stderr
    pid = int((root / "faasd.pid").read_text())
    assert started.stdout.splitlines() == [
        f"faasd runs as PID {pid} (settings: {settings}, log: {root / 'faasd.log'}).",
        f"Stop it with: sudo faasd-background stop   (or: sudo kill {pid})",
    ]
    assert Path(f"/proc/{pid}/comm").read_text() == "faasd\n"
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"FAASD_LOG_FILE={root / 'faasd.log'}".encode() in environ, "faasd rotates the log it writes"
    assert "faasd.daemon ready" in (root / "faasd.log").read_text()
    socket = root / "run" / "faasd.sock"
    listed = subprocess.run([str(BIN / "faas"), "--socket", str(socket), "list"], capture_output=True, text=True)
    assert listed.returncode == 0, "the settings file's run dir is where it listens"
    assert (root / "state" / "faasd.lock").read_text().strip() == str(pid), "and its state dir is the one it holds"

    again = background("start", env)
    assert again.returncode == 0 and f"faasd already runs as PID {pid}" in again.stdout, "no second daemon"
    assert int((root / "faasd.pid").read_text()) == pid

    assert "ExecStartPre=-/usr/local/bin/faasd-background stop" in UNIT.read_text(), "systemd takes over from it"
    stopped = background("stop", env)
    assert (stopped.returncode, stopped.stdout) == (0, f"Stopped faasd (PID {pid}).\n")
    assert not alive(pid) and not (root / "faasd.pid").exists() and not socket.exists()
    assert background("stop", env).stdout == "faasd-background: no faasd started by faasd-background runs\n"
