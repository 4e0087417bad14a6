import importlib.metadata
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from faas_cli.client import ApiError, HttpEndpoint, NotFound, Unauthorized, error_from_response
from faas_cli.main import main


def test_error_from_response_uses_the_daemons_message() -> None:
    error = error_from_response(404, b'{"error": "no function named \'x\'"}')
    assert isinstance(error, NotFound) and error.status == 404 and str(error) == "no function named 'x'"
    other = error_from_response(502, b"<html>proxy</html>")
    assert type(other) is ApiError and str(other) == "<html>proxy</html>"
    assert type(error_from_response(401, b'{"error": "no token"}')) is Unauthorized


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


def test_main_help_shows_how_to_reach_a_tcp_daemon() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "FAAS_HOST=http://127.0.0.1:8080" in result.output and "FAAS_TOKEN=" in result.output


def test_every_command_has_help_with_an_example() -> None:
    assert "Example:" in CliRunner().invoke(main, ["--help"]).output
    for command in main.commands.values():
        result = CliRunner().invoke(main, [command.name, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, command.name


def test_main_help_documents_exit_codes_and_completion() -> None:
    output = CliRunner().invoke(main, ["--help"]).output
    assert "Exit codes:\n    0  success\n    1  a user error or a refused request" in output
    assert "    2  faasd could not be reached (and only then)" in output
    assert 'eval "$(_FAAS_COMPLETE=bash_source faas)"' in output


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["list", "--bogus"],
        ["ip"],
        ["new", "x", "--memory"],
        ["stats", "--raw", "--json"],
        [],
    ],
)
def test_usage_errors_exit_1_because_2_means_unreachable(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["--socket", "/nonexistent/faasd.sock", *args])
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize("program", ["faas", "faasd"])
def test_both_programs_print_their_version(program: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / program), "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout == f"{program}, version {importlib.metadata.version('faasd')}\n"


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://127.0.0.1:8080", HttpEndpoint("http", "127.0.0.1", 8080)),
        ("http://127.0.0.1:8080/", HttpEndpoint("http", "127.0.0.1", 8080)),
        ("http://127.0.0.1", HttpEndpoint("http", "127.0.0.1", 80)),
        ("https://localhost", HttpEndpoint("https", "localhost", 443)),
        ("http://[::1]:8080", HttpEndpoint("http", "::1", 8080)),
    ],
)
def test_host_urls_parse(url: str, endpoint: HttpEndpoint) -> None:
    assert HttpEndpoint.parse(url) == endpoint


def test_endpoints_print_as_urls_in_messages() -> None:
    assert str(HttpEndpoint("http", "::1", 8080)) == "http://[::1]:8080"
    assert str(HttpEndpoint("https", "localhost", 443)) == "https://localhost:443"


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("127.0.0.1:8080", "give http://HOST:PORT"),
        ("tcp://127.0.0.1:8080", "give http://HOST:PORT"),
        ("http://", "give http://HOST:PORT"),
        ("http://127.0.0.1:99999", "from 1 to 65535"),
        ("http://127.0.0.1:port", "from 1 to 65535"),
        ("http://user:pw@127.0.0.1:8080", "only the scheme, host and port"),
        ("http://127.0.0.1:8080/api", "only the scheme, host and port"),
        ("http://127.0.0.1:8080/?token=x", "only the scheme, host and port"),
    ],
)
def test_bad_host_urls_are_usage_errors(url: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        HttpEndpoint.parse(url)
    result = CliRunner().invoke(main, ["--host", url, "list"])
    assert result.exit_code == 1 and hint in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_host_exits_2_with_a_hint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner(env={"FAAS_HOST": url}).invoke(main, ["list"])
    assert result.exit_code == 2
    assert f"faasd is not reachable at {url}" in result.output and "--listen" in result.output


def answer_once_on_tcp(status: bytes, body: bytes) -> tuple[str, threading.Thread, list[bytes]]:
    """A one-shot HTTP server on 127.0.0.1; the request it got lands in the returned list."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                received.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))

    thread = threading.Thread(target=answer)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", thread, received


def test_the_token_is_sent_as_a_bearer_header() -> None:
    url, thread, received = answer_once_on_tcp(b"200 OK", b'{"functions": []}')
    result = CliRunner(env={"FAAS_TOKEN": " s3cret-token\n"}).invoke(main, ["--host", url, "list", "--json"])
    thread.join()
    assert result.exit_code == 0, result.output
    assert b"\r\nAuthorization: Bearer s3cret-token\r\n" in received[0]


def test_a_missing_token_exits_1_and_says_how_to_pass_one() -> None:
    url, thread, _ = answer_once_on_tcp(b"401 Unauthorized", b'{"error": "this address needs a token"}')
    result = CliRunner().invoke(main, ["--host", url, "list"])
    thread.join()
    assert result.exit_code == 1
    assert result.output.startswith(f"faas: faasd at {url} needs a token: pass --token or set FAAS_TOKEN")


def test_a_wrong_token_exits_1_with_the_daemons_reason() -> None:
    url, thread, _ = answer_once_on_tcp(b"401 Unauthorized", b'{"error": "the token does not match"}')
    result = CliRunner().invoke(main, ["--host", url, "--token", "guess", "list"])
    thread.join()
    assert result.exit_code == 1
    assert result.output == f"faas: faasd at {url} refused the token: the token does not match\n"


@pytest.mark.parametrize("token", ["", "  ", "two words", "tab\there", "line\nbreak", "é"])
def test_a_malformed_token_is_a_usage_error(token: str) -> None:
    result = CliRunner().invoke(main, ["--host", "http://127.0.0.1:1", "--token", token, "list"])
    assert result.exit_code == 1 and "Invalid value for '--token'" in result.output


def test_an_image_that_looks_like_an_option_is_refused_before_any_engine_runs() -> None:
    result = CliRunner().invoke(main, ["new", "x", "-t", "--output=/etc/passwd"])
    assert result.exit_code == 1
    assert "'--output=/etc/passwd' is not an image name: give NAME[:TAG]" in result.output


def test_a_malformed_image_reference_is_refused_before_any_engine_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\ntouch {marker}\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["new", "x", "-t", "Hello World"])
    assert result.exit_code == 1 and not marker.exists()
    assert "the image 'Hello World' is not an image reference: use NAME[:TAG]" in result.output


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["--bogus"], "faas: No such option '--bogus'. Did you mean '--host'? See 'faas --help'."),
        (["new"], "faas: Missing argument 'NAME'. See 'faas new --help'."),
        (["nope"], "faas: No such command 'nope'. See 'faas --help'."),
        (["stats", "--raw", "--json"], "faas: --raw and --json are two formats: give one. See 'faas stats --help'."),
    ],
)
def test_usage_errors_are_one_line_starting_like_every_error(args: list[str], first_line: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "faas"), "--socket", "/nonexistent/faasd.sock", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and result.stderr == first_line + "\n" and result.stdout == ""
