import socket
import threading
from pathlib import Path

from click.testing import CliRunner

from faas_cli.client import ApiError, NotFound, error_from_response
from faas_cli.main import main


def test_error_from_response_uses_the_daemons_message() -> None:
    error = error_from_response(404, b'{"error": "no function named \'x\'"}')
    assert isinstance(error, NotFound) and error.status == 404 and str(error) == "no function named 'x'"
    other = error_from_response(502, b"<html>proxy</html>")
    assert type(other) is ApiError and str(other) == "<html>proxy</html>"


def test_unreachable_daemon_exits_2_with_a_hint(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--socket", str(tmp_path / "none.sock"), "list"])
    assert result.exit_code == 2
    assert f"faasd is not running at {tmp_path / 'none.sock'}" in result.output
    assert "FAAS_SOCKET" in result.output


def test_refused_request_exits_1_with_the_message(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def answer_once() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        body = b'{"error": "no function named \'ghost\'"}'
        conn.sendall(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        conn.close()

    thread = threading.Thread(target=answer_once)
    thread.start()
    result = CliRunner(env={"FAAS_SOCKET": str(path)}).invoke(main, ["ip", "ghost"])
    thread.join()
    server.close()
    assert result.exit_code == 1
    assert result.output == "faas: no function named 'ghost'\n"


def test_every_command_has_help_with_an_example() -> None:
    for command in main.commands.values():
        result = CliRunner().invoke(main, [command.name, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, command.name
