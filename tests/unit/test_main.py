import ipaddress

import pytest
from click.testing import CliRunner

from faasd import daemon
from faasd.config import Config, TcpAddress
from faasd.main import main


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The configs ``faasd`` would run with; the daemon itself is not started."""
    configs: list[Config] = []
    monkeypatch.setattr(daemon, "run", lambda config: configs.append(config) or 0)
    return configs


def test_tcp_listener_is_off_by_default(started: list[Config]) -> None:
    assert CliRunner().invoke(main, []).exit_code == 0
    assert started[0].listen is None


def test_listen_comes_from_the_flag_or_faasd_listen(started: list[Config]) -> None:
    assert CliRunner().invoke(main, ["--listen", "127.0.0.1:8080"]).exit_code == 0
    assert CliRunner(env={"FAASD_LISTEN": "[::1]:9090"}).invoke(main, []).exit_code == 0
    assert [c.listen for c in started] == [
        TcpAddress(ipaddress.ip_address("127.0.0.1"), 8080),
        TcpAddress(ipaddress.ip_address("::1"), 9090),
    ]


def test_a_bad_listen_address_is_a_usage_error(started: list[Config]) -> None:
    result = CliRunner().invoke(main, ["--listen", "localhost:8080"])
    assert result.exit_code == 2 and "the host must be an IP address" in result.output
    assert started == []
