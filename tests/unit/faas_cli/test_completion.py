"""Shell completion of function names: from the daemon when it answers, nothing when it hangs."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from click.testing import CliRunner, Result

from faas_cli.main import COMPLETION_TIMEOUT_SECONDS, main


def complete(socket_path: Path, words: str) -> Result:
    """What bash's completion asks ``faas`` for ``faas --socket SOCKET WORDS``."""
    env = {
        "_FAAS_COMPLETE": "bash_complete",
        "COMP_WORDS": f"faas --socket {socket_path} {words}",
        "COMP_CWORD": str(2 + len(words.split(" "))),  # the index of the last word
    }
    return CliRunner(env=env).invoke(main, [], prog_name="faas")


def test_names_come_from_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "faasd.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = json.dumps({"functions": [{"name": "hello"}, {"name": "help"}, {"name": "other"}]}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=answer)
    thread.start()
    result = complete(path, "logs hel")
    thread.join()
    server.close()
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["plain,hello", "plain,help"]


def test_a_hung_daemon_gets_no_names_in_bounded_time(tmp_path: Path) -> None:
    """The daemon's socket accepts (the kernel's backlog does) but nothing ever answers."""
    path = tmp_path / "faasd.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        results: list[Result] = []
        started = time.monotonic()
        worker = threading.Thread(target=lambda: results.append(complete(path, "logs ")), daemon=True)
        worker.start()
        worker.join(timeout=COMPLETION_TIMEOUT_SECONDS + 30)
        assert not worker.is_alive(), "completion is still waiting on a daemon that never answers"
    assert results[0].exit_code == 0 and results[0].output.strip() == ""
    assert time.monotonic() - started >= COMPLETION_TIMEOUT_SECONDS
