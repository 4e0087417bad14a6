import ipaddress

import pytest

from faasd.config import TcpAddress


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("127.93.1.2:1", "127.93.1.2", 1),
        ("[::1]:65535", "::1", 65535),
    ],
)
def test_listen_addresses_parse(text: str, host: str, port: int) -> None:
    address = TcpAddress.parse(text)
    assert address == TcpAddress(ipaddress.ip_address(host), port)
    assert str(address) == text


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:", "HOST:PORT"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:-1", "from 1 to 65535"),
        ("127.0.0.1:８０", "from 1 to 65535"),
        (":8080", "must be an IP address"),
        ("localhost:8080", "must be an IP address"),
        ("127.0.0.1 :8080", "must be an IP address"),
        ("::1:8080", "in brackets"),
        ("[localhost]:8080", "must be an IP address"),
    ],
)
def test_bad_listen_addresses_say_what_is_accepted(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        TcpAddress.parse(text)
